import { countQueuedMessages, createDeliveryQueue } from "@postern/queue";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { check } from "../check";
import { adminRouteErrors, errorResponses } from "../errors";

const systemJson = z.object({
  checks: z
    .object({ postgres: z.string(), redis: z.string() })
    .catchall(z.string())
    .describe('"ok" or why not, as /health/ready answers them (roles: those of the process that answers)'),
  queue: z
    .object({
      backlogMessages: z.number().describe("messages waiting for a worker, every project's backlog added up"),
      waitingJobs: z.number(),
      activeJobs: z.number().describe("jobs a worker is delivering now"),
      delayedJobs: z.number().describe("jobs waiting for a retry's time"),
      workers: z.number().describe("delivery workers connected to the queue, on every node"),
    })
    .nullable()
    .describe("null when Redis does not answer"),
});

/**
 * `GET /admin/system`: the state an operator's dashboard shows (PostgreSQL, Redis, the delivery
 * queue's depth and the workers consuming it), in one answer. Read from the stores on each
 * request, as readiness is.
 */
export function adminSystemRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    const queue = createDeliveryQueue(deps.redis, deps.config.redisKeyPrefix);
    app.addHook("onClose", async () => {
      await queue.close();
    });

    app.get(
      "/system",
      {
        schema: {
          tags: ["admin"],
          summary: "System health: PostgreSQL, Redis, the delivery queue's depth and its workers",
          security: [{ admin: [] }],
          response: { 200: systemJson, ...errorResponses(...adminRouteErrors) },
        },
      },
      async (request) => {
        const [postgres, redis] = await Promise.all([
          check(() => deps.db.$queryRaw`SELECT 1`),
          check(() => deps.redis.ping()),
        ]);
        let queueState: z.infer<typeof systemJson>["queue"] = null;
        if (redis === "ok") {
          try {
            const [counts, workers, backlogMessages] = await Promise.all([
              queue.getJobCounts("waiting", "active", "delayed", "prioritized"),
              queue.getWorkers(),
              countQueuedMessages(deps.redis, deps.config.redisKeyPrefix),
            ]);
            queueState = {
              backlogMessages,
              waitingJobs: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
              activeJobs: counts.active ?? 0,
              delayedJobs: counts.delayed ?? 0,
              workers: workers.length,
            };
          } catch (error) {
            request.log.warn({ err: error }, "delivery queue state unavailable");
          }
        }
        return { checks: { postgres, redis, ...deps.roleReadiness?.() }, queue: queueState };
      },
    );
  };
}
