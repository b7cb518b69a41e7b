import { Resolver } from "node:dns/promises";

/** TXT records at a name, each record's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2). */
export type TxtLookup = (name: string) => Promise<string[]>;

/** The exchanges of the MX records at a name, lower-case, without a trailing dot. */
export type MxLookup = (name: string) => Promise<string[]>;

/** A look-up that DNS could not answer (timeout, SERVFAIL, refused): not the same as no record. */
export class DnsLookupError extends Error {
  override readonly name = "DnsLookupError";
}

/** Answers meaning "there is no such record", as node:dns names them. */
const noRecord = new Set(["ENODATA", "ENOTFOUND"]);

/**
 * TXT look-ups through node:dns, at `servers` (DNS_SERVERS, `ip[:port]`) or the system's
 * resolvers. Also the shape mailauth's verifier takes as its `resolver`.
 */
export function createTxtLookup(
  servers: string[] | undefined,
  options: { timeoutMs?: number } = {},
): TxtLookup {
  const resolver = new Resolver({ timeout: options.timeoutMs ?? 5000, tries: 2 });
  if (servers) resolver.setServers(servers);
  return async (name) => {
    try {
      const records = await resolver.resolveTxt(name);
      return records.map((chunks) => chunks.join(""));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (noRecord.has(code)) return [];
      throw new DnsLookupError(`TXT ${name}: ${code || (error as Error).message}`);
    }
  };
}

/** MX look-ups through node:dns, as `createTxtLookup`; no record (NXDOMAIN, NODATA) is an empty list. */
export function createMxLookup(
  servers: string[] | undefined,
  options: { timeoutMs?: number } = {},
): MxLookup {
  const resolver = new Resolver({ timeout: options.timeoutMs ?? 5000, tries: 2 });
  if (servers) resolver.setServers(servers);
  return async (name) => {
    try {
      const records = await resolver.resolveMx(name);
      return records.map((record) => record.exchange.toLowerCase().replace(/\.$/, ""));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (noRecord.has(code)) return [];
      throw new DnsLookupError(`MX ${name}: ${code || (error as Error).message}`);
    }
  };
}
