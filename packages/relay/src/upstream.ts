/**
 * A project's upstream (or a route's): `smtp://[user[:pass]@]host[:port][?tls=required|none]` or
 * `smtps://[user[:pass]@]host[:port]`, with `&verify=false` after `tls=required` or on `smtps://`.
 * The password is stored apart from the URL, sealed (packages/auth secretbox).
 *
 * TLS levels, as Postfix's `smtp_tls_security_level`:
 * - `smtp://` opportunistic (`may`): STARTTLS when offered, the certificate not verified (an
 *   unverified session still protects against passive capture). AUTH only once TLS is up.
 * - `?tls=required` (`secure`) and `smtps://`: no message without TLS, and the certificate must
 *   verify for the host name (Node's CA store) unless `verify=false` (`encrypt`).
 * - `?tls=none`: STARTTLS is not tried and AUTH may travel in the clear: an operator's explicit
 *   choice for an upstream on a trusted network.
 */
export type UpstreamTls = "opportunistic" | "required" | "none";

export interface Upstream {
  /** Implicit TLS (`smtps://`). */
  secure: boolean;
  host: string;
  port: number;
  user: string | undefined;
  /** STARTTLS policy on `smtp://` (`required` also for `smtps://`, which is TLS throughout). */
  tls: UpstreamTls;
  /** Whether the upstream's certificate must verify: with `smtps://` or `tls=required` unless `verify=false`. */
  verifyCertificate: boolean;
}

export class UpstreamUrlError extends Error {
  override name = "UpstreamUrlError";
}

export interface ParsedUpstreamUrl {
  upstream: Upstream;
  /** The URL as stored and shown: everything but the password. */
  publicUrl: string;
  password: string | undefined;
}

const urlShape = "must be a URL like smtp://user:pass@host:587?tls=required or smtps://host:465";

export function parseUpstreamUrl(input: string): ParsedUpstreamUrl {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new UpstreamUrlError(urlShape);
  }
  if (url.protocol !== "smtp:" && url.protocol !== "smtps:") {
    throw new UpstreamUrlError("must start with smtp:// or smtps://");
  }
  if (!url.hostname) throw new UpstreamUrlError("must name a host");
  const secure = url.protocol === "smtps:";
  for (const key of url.searchParams.keys()) {
    if (key !== "tls" && key !== "verify")
      throw new UpstreamUrlError(`unknown parameter '${key}' (only tls and verify)`);
  }
  const tlsParam = url.searchParams.get("tls");
  if (tlsParam !== null && tlsParam !== "required" && tlsParam !== "none")
    throw new UpstreamUrlError("tls parameter can only be 'required' or 'none'");
  if (secure && tlsParam === "none")
    throw new UpstreamUrlError("smtps:// is TLS throughout: tls=none contradicts it");
  const tls: UpstreamTls = secure ? "required" : (tlsParam ?? "opportunistic");
  const verifyParam = url.searchParams.get("verify");
  if (verifyParam !== null && verifyParam !== "false" && verifyParam !== "true")
    throw new UpstreamUrlError("verify parameter can only be 'true' or 'false'");
  if (verifyParam !== null && tls !== "required")
    throw new UpstreamUrlError("verify applies only to smtps:// and tls=required");
  if (url.pathname && url.pathname !== "/") throw new UpstreamUrlError("must not have a path");
  const port = url.port ? Number(url.port) : secure ? 465 : 25;
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  if (password !== undefined && user === undefined) throw new UpstreamUrlError("a password needs a user");
  const verifyCertificate = tls === "required" && verifyParam !== "false";
  const query = [
    ...(tlsParam ? [`tls=${tlsParam}`] : []),
    ...(verifyParam === "false" ? ["verify=false"] : []),
  ].join("&");
  const publicUrl = `${url.protocol}//${url.username ? `${url.username}@` : ""}${url.host}${query ? `?${query}` : ""}`;
  return {
    upstream: { secure, host: url.hostname, port, user, tls, verifyCertificate },
    publicUrl,
    password,
  };
}
