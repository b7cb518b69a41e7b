import { recordAudit } from "@postern/audit";
import { type AuthInvalidation, publishAuthInvalidation } from "@postern/auth/invalidation";
import { openSecret, sealSecret } from "@postern/auth/secretbox";
import type { Database, Prisma } from "@postern/db";
import type { Redis } from "@postern/queue";
import { parseUpstreamUrl, UpstreamUrlError } from "@postern/relay/upstream";
import { ok, type Result, refuse } from "@postern/result";
import { z } from "zod";
import type { Actor } from "./projects";

/**
 * A project's routes (CONTRACT §10, docs/routing.md): recipient glob → where its mail goes.
 * The most specific pattern that matches a recipient wins; no match: the project's upstream.
 * Upstream URLs are stored as the project's upstream is, the password sealed apart from the URL
 * and never shown. The routes carry a version, bumped by each replacement: a PUT naming an older
 * version is refused (a lost update), and the caches (RouteBook) are keyed by it.
 */

/** A route's upstream as stored: the public URL and the sealed password, if any. */
export interface StoredRouteUrl {
  url: string;
  secret: string | null;
}

/**
 * How an MX host must do TLS (docs/routing.md, TLS policy): `opportunistic` STARTTLS when offered,
 * `required` STARTTLS or nothing is sent, `verify` also a certificate valid for the MX host's name
 * and the recipient domain's MTA-STS policy honoured.
 */
export type RouteTls = "opportunistic" | "required" | "verify";

/** A route's own caps for its destinations (docs/routing.md, Throttling); absent: the defaults. */
export interface RouteLimits {
  concurrency?: number;
  ratePerMinute?: number;
}

export type RouteTarget =
  | { type: "upstream"; urls: StoredRouteUrl[]; limits?: RouteLimits }
  /** To the recipient domain's MX hosts (docs/routing.md, Direct delivery). */
  | { type: "direct"; tls?: RouteTls; limits?: RouteLimits }
  /** Direct first; what the MX hosts defer goes to the URLs. */
  | { type: "hybrid"; urls: StoredRouteUrl[]; tls?: RouteTls; limits?: RouteLimits }
  | { type: "reject" };

export interface StoredRoute {
  match: string;
  target: RouteTarget;
}

/** What the API and CLI show: the URLs without their passwords. */
export interface RoutesView {
  version: number;
  routes: {
    match: string;
    target: { type: RouteTarget["type"]; urls?: string[]; tls?: RouteTls; limits?: RouteLimits };
  }[];
}

/** A recipient glob: `*`, or `local@domain` where local is `*` or literal and domain `*`, `*.d` or literal. */
const recipientGlob = z
  .string()
  .trim()
  .min(1)
  .max(320)
  .refine((pattern) => globShape(pattern) !== undefined, {
    error: "must be *, user@domain, *@domain, *@*.domain or user@*.domain",
  });

const urls = z.array(z.string().min(1).max(2000)).min(1).max(10);

const tls = z
  .enum(["opportunistic", "required", "verify"])
  .optional()
  .describe(
    "TLS towards MX hosts: opportunistic (default), required (STARTTLS or nothing is sent), verify (also a certificate valid for the MX host name, and MTA-STS)",
  );

const limits = z
  .object({
    concurrency: z
      .number()
      .int()
      .min(0)
      .max(10_000)
      .optional()
      .describe("deliveries in flight at once to each destination of the route, all workers; 0: no cap"),
    ratePerMinute: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .optional()
      .describe("deliveries started per minute to each destination of the route; 0: no cap"),
  })
  .optional()
  .describe(
    "caps per destination (recipient domain for direct, upstream host:port for URLs) instead of DESTINATION_CONCURRENCY and DESTINATION_RATE_PER_MINUTE",
  );

export const routesInputSchema = z.object({
  version: z.number().int().min(0).describe("the version read with GET; a stale one is refused with 409"),
  routes: z
    .array(
      z.object({
        match: recipientGlob,
        target: z.discriminatedUnion("type", [
          z.object({ type: z.literal("upstream"), urls, limits }),
          z.object({ type: z.literal("direct"), tls, limits }),
          z.object({ type: z.literal("hybrid"), urls, tls, limits }),
          z.object({ type: z.literal("reject") }),
        ]),
      }),
    )
    .max(1000),
});
export type RoutesInput = z.infer<typeof routesInputSchema>;

export type ReplaceRoutesResult = Result<
  { version: number },
  "not_found" | "version_conflict" | "invalid_routes",
  { message: string }
>;

export interface RouteServiceDeps {
  db: Database;
  redis: Redis;
  config: { encryptionKey: Buffer; redisKeyPrefix: string };
}

export function createRouteService({ db, redis, config }: RouteServiceDeps) {
  return {
    async get(projectId: string): Promise<RoutesView | undefined> {
      const row = await db.project.findUnique({
        where: { id: projectId },
        select: { routes: true, routesVersion: true },
      });
      return row ? routesView(row.routesVersion, row.routes as unknown as StoredRoute[]) : undefined;
    },

    /**
     * Replaces the routes when `input.version` is the current one. A URL given without a password
     * keeps the password stored for the same URL (user, host, port, parameters): a GET's routes
     * sent back unchanged, passwords being never shown, keep working.
     */
    async replace(projectId: string, input: RoutesInput, by: Actor): Promise<ReplaceRoutesResult> {
      const duplicate = input.routes.find((r, i) => input.routes.findIndex((o) => o.match === r.match) !== i);
      if (duplicate)
        return refuse("invalid_routes", { message: `routes: '${duplicate.match}' appears twice` });
      const outcome = await db.$transaction(async (tx) => {
        const [current] = await tx.$queryRaw<{ routes: StoredRoute[]; routesVersion: number }[]>`
          SELECT "routes", "routesVersion" FROM "Project" WHERE "id" = ${projectId}::uuid FOR UPDATE`;
        if (!current) return refuse("not_found", { message: `no project ${projectId}` });
        if (current.routesVersion !== input.version)
          return refuse("version_conflict", {
            message: `routes are at version ${current.routesVersion}, not ${input.version}: read them again`,
          });
        const kept = new Map(
          current.routes
            .flatMap((r) => ("urls" in r.target ? r.target.urls : []))
            .map((u) => [u.url, u.secret]),
        );
        let routes: StoredRoute[];
        try {
          routes = input.routes.map((route, index) => ({
            match: route.match.toLowerCase(),
            target:
              "urls" in route.target
                ? {
                    ...route.target,
                    urls: route.target.urls.map((url, n) =>
                      sealedUrl(url, `routes[${index}].target.urls[${n}]`),
                    ),
                  }
                : route.target,
          }));
        } catch (error) {
          if (error instanceof UpstreamUrlError) return refuse("invalid_routes", { message: error.message });
          throw error;
        }
        const version = current.routesVersion + 1;
        await tx.project.update({
          where: { id: projectId },
          data: { routes: routes as unknown as object, routesVersion: version },
        });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "project.updated",
          details: { routes: routesView(version, routes).routes } as unknown as Prisma.InputJsonObject,
        });
        return ok({ version });

        function sealedUrl(url: string, field: string): StoredRouteUrl {
          try {
            const parsed = parseUpstreamUrl(url);
            const secret =
              parsed.password === undefined
                ? (kept.get(parsed.publicUrl) ?? null)
                : sealSecret(parsed.password, config.encryptionKey);
            return { url: parsed.publicUrl, secret };
          } catch (error) {
            if (error instanceof UpstreamUrlError) throw new UpstreamUrlError(`${field}: ${error.message}`);
            throw error;
          }
        }
      });
      if (outcome.ok) {
        // SMTP nodes read the routes version with the project's policy: dropping it makes the next
        // MAIL read the new version (and so the new routes) on every node.
        const event: AuthInvalidation = { kind: "project", projectId };
        await publishAuthInvalidation(redis, config.redisKeyPrefix, event);
      }
      return outcome;
    },
  };
}
export type RouteService = ReturnType<typeof createRouteService>;

function routesView(version: number, routes: StoredRoute[]): RoutesView {
  return {
    version,
    routes: routes.map(({ match, target }) => ({
      match,
      target: "urls" in target ? { ...target, urls: target.urls.map((u) => u.url) } : target,
    })),
  };
}

interface GlobShape {
  /** Literal local part, or undefined for `*`. */
  local: string | undefined;
  /** `exact` domain, `suffix` (`*.d`: strictly below d), or any. */
  domain: { kind: "exact" | "suffix"; name: string } | { kind: "any" };
}

function globShape(pattern: string): GlobShape | undefined {
  if (pattern === "*") return { local: undefined, domain: { kind: "any" } };
  const at = pattern.lastIndexOf("@");
  if (at <= 0 || at === pattern.length - 1) return undefined;
  const local = pattern.slice(0, at);
  const domain = pattern.slice(at + 1);
  if (local !== "*" && local.includes("*")) return undefined;
  const localShape = local === "*" ? undefined : local;
  if (domain === "*") return { local: localShape, domain: { kind: "any" } };
  if (domain.startsWith("*.") && !domain.slice(2).includes("*") && domain.length > 2)
    return { local: localShape, domain: { kind: "suffix", name: domain.slice(2) } };
  if (domain.includes("*")) return undefined;
  return { local: localShape, domain: { kind: "exact", name: domain } };
}

/**
 * How specific a glob is, compared as a tuple: a literal local part beats `*`, then an exact domain
 * beats a suffix beats any, then a longer domain beats a shorter one. So `user@a.example` >
 * `*@a.example` > `*@*.a.example` > `*@*.example` > `*`.
 */
function specificity(shape: GlobShape): number[] {
  const domainRank = shape.domain.kind === "exact" ? 2 : shape.domain.kind === "suffix" ? 1 : 0;
  const domainLength = shape.domain.kind === "any" ? 0 : shape.domain.name.length;
  return [shape.local === undefined ? 0 : 1, domainRank, domainLength];
}

function matches(shape: GlobShape, address: string): boolean {
  const at = address.lastIndexOf("@");
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (shape.local !== undefined && shape.local !== local) return false;
  if (shape.domain.kind === "exact") return domain === shape.domain.name;
  if (shape.domain.kind === "suffix") return domain.endsWith(`.${shape.domain.name}`);
  return true;
}

/** Routes ready for matching: each glob parsed once. */
export interface CompiledRoutes {
  version: number;
  routes: { shape: GlobShape; rank: number[]; route: StoredRoute }[];
}

export function compileRoutes(version: number, routes: StoredRoute[]): CompiledRoutes {
  return {
    version,
    routes: routes.flatMap((route) => {
      const shape = globShape(route.match);
      return shape ? [{ shape, rank: specificity(shape), route }] : [];
    }),
  };
}

/** The most specific route matching `address` (compared in lower case), or undefined: the project's upstream. */
export function routeFor(compiled: CompiledRoutes, address: string): StoredRoute | undefined {
  const lower = address.toLowerCase();
  let best: CompiledRoutes["routes"][number] | undefined;
  for (const candidate of compiled.routes) {
    if (!matches(candidate.shape, lower)) continue;
    if (!best || compareRanks(candidate.rank, best.rank) > 0) best = candidate;
  }
  return best?.route;
}

function compareRanks(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

const noRoutes: CompiledRoutes = { version: 0, routes: [] };

/**
 * Per project, its compiled routes at the version last read. A caller passes the version it knows
 * (the SMTP session from the project policy, the worker from the message's load): the routes are
 * read from PostgreSQL only when that version is not the one cached, so a change is picked up
 * as soon as the version is, and nothing else needs invalidating. Version 0: no routes, no query.
 */
export class RouteBook {
  private readonly byProject = new Map<string, CompiledRoutes>();

  constructor(private readonly db: Database) {}

  async routesOf(projectId: string, version: number): Promise<CompiledRoutes> {
    if (version === 0) return noRoutes;
    const cached = this.byProject.get(projectId);
    if (cached && cached.version >= version) return cached;
    const row = await this.db.project.findUnique({
      where: { id: projectId },
      select: { routes: true, routesVersion: true },
    });
    if (!row) return noRoutes;
    const compiled = compileRoutes(row.routesVersion, row.routes as unknown as StoredRoute[]);
    this.byProject.set(projectId, compiled);
    return compiled;
  }
}

/** A route's upstream URLs with their passwords opened, for the worker. */
export function openRouteUrls(
  urls: StoredRouteUrl[],
  encryptionKey: Buffer,
): { url: string; password: string | undefined }[] {
  return urls.map((u) => ({
    url: u.url,
    password: u.secret ? openSecret(u.secret, encryptionKey) : undefined,
  }));
}
