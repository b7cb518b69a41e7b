import helmet from "@fastify/helmet";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ApiError } from "./errors";

/**
 * What every HTTP answer of Postern carries, and what no request may carry. The API and the
 * probes of a process without the API (probes.ts) install the same.
 */

/**
 * Security headers (helmet's defaults: nosniff, frame-ancestors, no referrer, a Content Security
 * Policy allowing only the page's own scripts, which is all swagger-ui at /docs loads), with two
 * exceptions: the API speaks plain HTTP, so neither `upgrade-insecure-requests` (a browser would
 * then fetch /docs' scripts over HTTPS from a port that has none) nor HSTS, which belongs to
 * whatever terminates TLS in front of it.
 */
export async function installSecurityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, {
    contentSecurityPolicy: { directives: { "upgrade-insecure-requests": null } },
    strictTransportSecurity: false,
  });
}

/** A route group whose answers must not be kept by browsers or proxies (new secrets, tenant data). */
export async function noStore(_request: FastifyRequest, reply: FastifyReply): Promise<void> {
  reply.header("cache-control", "no-store");
}

/**
 * A NUL character is refused in every text of a request (body, query, path), whatever the route:
 * PostgreSQL cannot store it in text, and no name, address or setting needs it. Checked once here
 * before validation, so the answer is the same 400 naming the field everywhere.
 */
export function refuseNulCharacters(app: FastifyInstance): void {
  app.addHook("preValidation", async (request) => {
    const field =
      fieldWithNul(request.params, "params") ??
      fieldWithNul(request.query, "querystring") ??
      fieldWithNul(request.body, "body");
    if (field) {
      throw new ApiError("validation_error", `${field}: must not contain the NUL character (U+0000)`);
    }
  });
}

/** The path (as validation errors name fields: `body.senderDomains.0`) of a text holding NUL. */
function fieldWithNul(value: unknown, path: string): string | undefined {
  if (typeof value === "string") return value.includes("\u0000") ? path : undefined;
  if (typeof value !== "object" || value === null || Buffer.isBuffer(value)) return undefined;
  for (const [key, inner] of Object.entries(value)) {
    const innerPath = `${path}.${key.replaceAll("\u0000", "\\u0000")}`;
    if (key.includes("\u0000")) return innerPath;
    const found = fieldWithNul(inner, innerPath);
    if (found) return found;
  }
  return undefined;
}

const safeMethods = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Requests that change something and carry the dashboard's session cookie must come from the
 * dashboard's own pages. SameSite=Strict keeps other sites' pages from sending the cookie, but a
 * site is not an origin: a page on another port of the same host, or on a sibling subdomain, is
 * same-site. So, as Go's `http.CrossOriginProtection` does: a browser's `Sec-Fetch-Site` must say
 * `same-origin` (or `none`, the user's own navigation); without it, an `Origin` header must name
 * this host. A request with neither comes from a program, not from a page another site controls.
 */
export function refuseCrossSiteRequest(request: FastifyRequest): void {
  if (safeMethods.has(request.method)) return;
  const site = request.headers["sec-fetch-site"];
  if (site !== undefined) {
    if (site === "same-origin" || site === "none") return;
    throw new ApiError(
      "cross_site_request",
      `a ${site} request cannot change anything with a dashboard session`,
    );
  }
  const origin = request.headers.origin;
  if (origin === undefined) return;
  let host: string | undefined;
  try {
    host = new URL(origin).host;
  } catch {}
  if (host !== undefined && host === request.headers.host) return;
  throw new ApiError(
    "cross_site_request",
    `a request from ${origin} cannot change anything with a dashboard session`,
  );
}
