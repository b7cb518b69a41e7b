/**
 * A project's upstream: `smtp://[user[:pass]@]host[:port][?tls=required]` (STARTTLS when offered,
 * required with tls=required) or `smtps://[user[:pass]@]host[:port]` (implicit TLS).
 * The password is stored apart from the URL, sealed (packages/auth secretbox).
 */
export interface Upstream {
  secure: boolean;
  host: string;
  port: number;
  user: string | undefined;
  requireTls: boolean;
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

export function parseUpstreamUrl(input: string): ParsedUpstreamUrl {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new UpstreamUrlError("must be a URL like smtp://user:pass@host:587 or smtps://host:465");
  }
  if (url.protocol !== "smtp:" && url.protocol !== "smtps:") {
    throw new UpstreamUrlError("must start with smtp:// or smtps://");
  }
  if (!url.hostname) throw new UpstreamUrlError("must name a host");
  const secure = url.protocol === "smtps:";
  const tls = url.searchParams.get("tls");
  if (tls !== null && tls !== "required") throw new UpstreamUrlError("tls parameter can only be 'required'");
  for (const key of url.searchParams.keys()) {
    if (key !== "tls") throw new UpstreamUrlError(`unknown parameter '${key}' (only tls=required)`);
  }
  if (url.pathname && url.pathname !== "/") throw new UpstreamUrlError("must not have a path");
  const port = url.port ? Number(url.port) : secure ? 465 : 25;
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  if (password !== undefined && user === undefined) throw new UpstreamUrlError("a password needs a user");
  const publicUrl = `${url.protocol}//${url.username ? `${url.username}@` : ""}${url.host}${tls ? "?tls=required" : ""}`;
  return {
    upstream: { secure, host: url.hostname, port, user, requireTls: tls === "required" },
    publicUrl,
    password,
  };
}
