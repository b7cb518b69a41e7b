import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyPluginAsync } from "fastify";

/**
 * The web dashboard at `/`: the static files scripts/build-dashboard.mjs writes to
 * apps/dashboard/dist at install (npm's postinstall), before `npm start` and before `npm test`.
 * The pages call the same `/v1`, `/admin` and `/session` routes as any client.
 */

/** apps/dashboard/dist of the repository this module runs from: its sources or the bundle in dist/. */
export function dashboardAssetsDir(from = dirname(fileURLToPath(import.meta.url))): string | undefined {
  const candidate = join(from, "apps", "dashboard", "dist");
  if (existsSync(join(candidate, "index.html"))) return candidate;
  const parent = dirname(from);
  return parent === from ? undefined : dashboardAssetsDir(parent);
}

/**
 * Stricter than the API's policy (http-security.ts): no inline style either (the pages set
 * styles through the DOM, which a policy does not restrict), no frames, forms only to this origin.
 */
export const dashboardContentSecurityPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

export function dashboardRoutes(assetsDir = dashboardAssetsDir()): FastifyPluginAsync {
  return async (app) => {
    if (!assetsDir) {
      // An install without its build step (npm ci --ignore-scripts): say how to get the pages.
      app.get("/", { schema: { hide: true } }, async (_request, reply) =>
        reply
          .status(503)
          .type("text/plain; charset=utf-8")
          .send("The dashboard is not built: run `npm run build:dashboard` and restart.\n"),
      );
      return;
    }
    await app.register(fastifyStatic, {
      root: assetsDir,
      prefix: "/",
      // One route per file found now: every other path stays the API's (its 404 is JSON).
      wildcard: false,
      index: ["index.html"],
      schemaHide: true,
      setHeaders(reply, path) {
        reply.header("content-security-policy", dashboardContentSecurityPolicy);
        // Names under assets/ carry a content hash; index.html names the current ones.
        reply.header(
          "cache-control",
          path.includes("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
        );
      },
    });
  };
}
