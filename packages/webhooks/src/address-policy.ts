import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/**
 * Which addresses a webhook may be sent to (SSRF): only public unicast ones, unless the operator
 * allows private networks (WEBHOOK_ALLOW_PRIVATE). A URL is checked when an endpoint is created or
 * changed, and every connection again, against the address it is made to: the sender resolves the
 * host itself and connects to the address it checked (`checkedLookup`), so a name that resolves to
 * a public address at creation and to 127.0.0.1 later (DNS rebinding) is refused at connect time.
 */

/** Why an address is refused, in the words of ipaddr.js's ranges (e.g. `loopback`, `private`). */
export function refusedRange(address: string): string | undefined {
  if (!ipaddr.isValid(address)) return "invalid";
  // `process`: ::ffff:127.0.0.1 reaches 127.0.0.1, and is judged as the IPv4 address it carries.
  const range = ipaddr.process(address).range();
  // Everything that is not plain unicast: loopback, private (RFC 1918), unique local (fc00::/7),
  // link-local, unspecified, carrier-grade NAT, multicast, broadcast, reserved and documentation
  // ranges, and IPv6 forms that embed or translate other addresses (NAT64, 6to4, Teredo).
  return range === "unicast" ? undefined : range;
}

export class RefusedAddressError extends Error {
  override readonly name = "RefusedAddressError";
  readonly code = "EWEBHOOKADDRESS";
}

function refusal(host: string, address: string, range: string): RefusedAddressError {
  const target = host === address ? address : `${host} resolves to ${address}`;
  return new RefusedAddressError(
    `${target}, a ${range} address: refused (set WEBHOOK_ALLOW_PRIVATE=true to allow private networks)`,
  );
}

export type Resolve = (host: string) => Promise<LookupAddress[]>;

/** The system's resolver (getaddrinfo), every address of the name. */
export const systemResolve: Resolve = (host) =>
  new Promise((resolve, reject) =>
    dnsLookup(host, { all: true, verbatim: true }, (error, addresses) =>
      error ? reject(error) : resolve(addresses),
    ),
  );

/** `[::1]` → `::1`: URL hostnames keep IPv6 literals in brackets. */
export function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, "$1");
}

/**
 * The addresses `host` resolves to, each allowed: a refusal when any is not (a name with one
 * public and one private address could be made to connect to the private one). An IP literal is
 * its own address.
 */
export async function allowedAddresses(
  host: string,
  policy: { allowPrivate: boolean; resolve?: Resolve },
): Promise<LookupAddress[]> {
  const family = isIP(host);
  const addresses =
    family !== 0 ? [{ address: host, family }] : await (policy.resolve ?? systemResolve)(host);
  if (addresses.length === 0) throw new Error(`${host} has no address`);
  if (policy.allowPrivate) return addresses;
  for (const { address } of addresses) {
    const range = refusedRange(address);
    if (range) throw refusal(host, address, range);
  }
  return addresses;
}

type LookupCallback = (
  error: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A `lookup` for node:net (an http.Agent's connections): resolves the host, refuses it unless every
 * address is allowed, and hands net the addresses it checked, so the connection goes to one of them.
 */
export function checkedLookup(policy: { allowPrivate: boolean; resolve?: Resolve }) {
  return (host: string, options: { all?: boolean }, callback: LookupCallback): void => {
    allowedAddresses(host, policy).then(
      (addresses) => {
        if (options.all) callback(null, addresses);
        else {
          const first = addresses[0] as LookupAddress;
          callback(null, first.address, first.family);
        }
      },
      (error: NodeJS.ErrnoException) => callback(error, options.all ? [] : ""),
    );
  };
}
