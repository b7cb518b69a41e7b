import { type Database, sqlPoolOf } from "@postern/db";
import type { Redis } from "@postern/queue";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { check } from "../check";
import { errorResponses } from "../errors";

/** Each role this process runs (`api`, `smtp`, `worker`, ...): "ok" while it serves, else why not. */
export type RoleReadiness = () => Record<string, string>;

const readiness = z.object({
  status: z.enum(["ok", "unavailable"]),
  checks: z
    .object({ postgres: z.string(), postgresReplica: z.string().optional(), redis: z.string() })
    .catchall(z.string())
    .describe(
      '"ok" or why not, for PostgreSQL, its read replica (`postgresReplica`, with DATABASE_REPLICA_URL in a process running the API), Redis and each role of this process (api, smtp, worker): "starting", "stopping", ...',
    ),
});

/**
 * Liveness (`/health`: the process answers) and readiness (`/health/ready`: PostgreSQL and Redis
 * answer now, and every role of this process serves: SMTP listening, workers consuming, the API
 * up). Readiness really queries both stores on every request: a load balancer must stop sending
 * traffic the moment either is gone; and it is 503 until the last role of the process serves and
 * from the moment the process begins to stop, so that no traffic is sent to a port that refuses.
 */
export function healthRoutes(deps: {
  db: Database;
  /** The API's read replica: checked as `postgresReplica`, since the API's history reads need it. */
  replica?: Database;
  redis: Redis;
  roleReadiness?: RoleReadiness;
}): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/health",
      {
        schema: {
          tags: ["health"],
          summary: "Liveness",
          response: {
            200: z.object({ status: z.literal("ok") }),
            ...errorResponses("validation_error", "internal_error"),
          },
        },
      },
      async () => ({ status: "ok" as const }),
    );
    app.get(
      "/health/ready",
      {
        schema: {
          tags: ["health"],
          summary: "Readiness: PostgreSQL and Redis answer, every role of the process serves",
          response: {
            200: readiness,
            503: readiness,
            ...errorResponses("validation_error", "internal_error"),
          },
        },
      },
      async (_request, reply) => {
        const { replica } = deps;
        const [postgres, postgresReplica, redis] = await Promise.all([
          // On the pool, not through Prisma: a probe every few seconds must not be what loads Prisma's
          // query compiler into an idle process (docs/operations.md, Memory).
          check(() => sqlPoolOf(deps.db).query("SELECT 1")),
          replica && check(() => sqlPoolOf(replica).query("SELECT 1")),
          check(() => deps.redis.ping()),
        ]);
        const checks = {
          postgres,
          ...(postgresReplica === undefined ? {} : { postgresReplica }),
          redis,
          ...deps.roleReadiness?.(),
        };
        const ok = Object.values(checks).every((state) => state === "ok");
        return reply.status(ok ? 200 : 503).send({ status: ok ? "ok" : "unavailable", checks });
      },
    );
  };
}
