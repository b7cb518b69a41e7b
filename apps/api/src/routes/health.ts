import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";

const checkTimeoutMs = 2000;

type CheckResult = "ok" | string;

async function check(probe: () => Promise<unknown>): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      probe(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${checkTimeoutMs} ms`)), checkTimeoutMs);
      }),
    ]);
    return "ok";
  } catch (error) {
    return (error as Error).message || "unavailable";
  } finally {
    clearTimeout(timer);
  }
}

const readiness = z.object({
  status: z.enum(["ok", "unavailable"]),
  checks: z.object({ postgres: z.string(), redis: z.string() }),
});

/**
 * Liveness (`/health`: the process answers) and readiness (`/health/ready`: PostgreSQL and Redis
 * answer now). Readiness really queries both on every request: a load balancer must stop sending
 * traffic the moment either is gone.
 */
export function healthRoutes(deps: { db: Database; redis: Redis }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/health",
      {
        schema: {
          tags: ["health"],
          summary: "Liveness",
          response: { 200: z.object({ status: z.literal("ok") }) },
        },
      },
      async () => ({ status: "ok" as const }),
    );
    app.get(
      "/health/ready",
      {
        schema: {
          tags: ["health"],
          summary: "Readiness: PostgreSQL and Redis answer",
          response: { 200: readiness, 503: readiness },
        },
      },
      async (_request, reply) => {
        const [postgres, redis] = await Promise.all([
          check(() => deps.db.$queryRaw`SELECT 1`),
          check(() => deps.redis.ping()),
        ]);
        const ok = postgres === "ok" && redis === "ok";
        return reply
          .status(ok ? 200 : 503)
          .send({ status: ok ? "ok" : "unavailable", checks: { postgres, redis } });
      },
    );
  };
}
