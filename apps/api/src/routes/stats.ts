import { Prisma } from "@postern/db";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError } from "../errors";
import { errors, isoDate } from "./schemas";

const dayMs = 24 * 60 * 60 * 1000;
/** Percentiles are computed over at most this many of the window's latest deliveries: bounded cost at any volume. */
const latencySample = 10_000;

const quotaWindow = z.object({
  limit: z.number(),
  used: z.number().nullable(),
  resetsAt: isoDate.nullable(),
});

const statsResponse = z.object({
  from: isoDate,
  to: isoDate,
  counts: z.object({
    accepted: z.number().describe("messages accepted (250) in the window, whatever their status now"),
    queued: z.number(),
    deferred: z.number(),
    delivered: z.number(),
    failed: z.number(),
    rejected: z.number().describe("transactions refused at SMTP (message.rejected audit events)"),
    quotaExceeded: z.number().describe("recipients refused over quota (quota.exceeded audit events)"),
  }),
  rejectedByReason: z.record(z.string(), z.number()),
  deliveryLatencyMs: z
    .object({ p50: z.number(), p90: z.number(), p99: z.number(), sampled: z.number() })
    .nullable()
    .describe("accept to delivery, over the window's latest deliveries (at most 10,000); null when none"),
  quota: z.object({ perMinute: quotaWindow, daily: quotaWindow }),
});

/**
 * `GET /v1/stats`. Every query here is served by an index range scan on (projectId, status,
 * createdAt) or (projectId, action, createdAt), so its cost follows the window, not the table; no
 * counter rows are updated on the accept path (they would serialise it). See docs/api.md.
 */
export function statsRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/stats",
      {
        schema: {
          tags: ["project"],
          summary: "Counts by status and rejection reason, delivery latency and quota usage for a window",
          security: [{ bearer: [] }],
          querystring: z.object({
            from: z.coerce.date().optional().describe("default: 24 hours before `to`"),
            to: z.coerce.date().optional().describe("default: now"),
          }),
          response: { 200: statsResponse, ...errors },
        },
      },
      async (request) => {
        const projectId = request.project.id;
        const to = request.query.to ?? new Date();
        const from = request.query.from ?? new Date(to.getTime() - dayMs);
        if (from >= to) throw new ApiError(400, "validation_error", "querystring.from: must be before `to`");

        const [byStatus, rejections, latency, project] = await Promise.all([
          deps.db.$queryRaw<{ status: string; n: number }[]>`
            SELECT status::text AS status, count(*)::int AS n FROM "Message"
            WHERE "projectId" = ${projectId}::uuid AND "createdAt" >= ${from} AND "createdAt" < ${to}
            GROUP BY status`,
          deps.db.$queryRaw<{ action: string; reason: string; n: number }[]>`
            SELECT action, coalesce(details->>'reason', 'unspecified') AS reason, count(*)::int AS n
            FROM "AuditEvent"
            WHERE "projectId" = ${projectId}::uuid AND action IN ('message.rejected', 'quota.exceeded')
              AND "createdAt" >= ${from} AND "createdAt" < ${to}
            GROUP BY 1, 2`,
          deps.db.$queryRaw<{ p: number[] | null; n: number }[]>`
            SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms) AS p, count(*)::int AS n
            FROM (
              SELECT extract(epoch FROM ("deliveredAt" - "createdAt")) * 1000 AS ms FROM "Message"
              WHERE "projectId" = ${projectId}::uuid AND status = 'delivered'
                AND "createdAt" >= ${from} AND "createdAt" < ${to} AND "deliveredAt" IS NOT NULL
              ORDER BY "createdAt" DESC LIMIT ${Prisma.raw(String(latencySample))}
            ) latest`,
          deps.db.project.findUniqueOrThrow({
            where: { id: projectId },
            select: { quotaPerMinute: true, quotaDaily: true },
          }),
        ]);

        const status = Object.fromEntries(byStatus.map((row) => [row.status, row.n]));
        const rejectedByReason: Record<string, number> = {};
        let rejected = 0;
        let quotaExceeded = 0;
        for (const row of rejections) {
          if (row.action === "quota.exceeded") quotaExceeded += row.n;
          else {
            rejected += row.n;
            rejectedByReason[row.reason] = (rejectedByReason[row.reason] ?? 0) + row.n;
          }
        }
        const sample = latency[0];
        const usage = await deps.quotaUsage?.({ id: projectId, ...project });
        return {
          from: from.toISOString(),
          to: to.toISOString(),
          counts: {
            accepted: byStatus.reduce((sum, row) => sum + row.n, 0),
            queued: status.queued ?? 0,
            deferred: status.deferred ?? 0,
            delivered: status.delivered ?? 0,
            failed: status.failed ?? 0,
            rejected,
            quotaExceeded,
          },
          rejectedByReason,
          deliveryLatencyMs:
            sample?.p && sample.n > 0
              ? {
                  p50: Math.round(sample.p[0] ?? 0),
                  p90: Math.round(sample.p[1] ?? 0),
                  p99: Math.round(sample.p[2] ?? 0),
                  sampled: sample.n,
                }
              : null,
          quota: {
            perMinute: {
              limit: project.quotaPerMinute,
              used: usage?.perMinute.used ?? null,
              resetsAt: usage?.perMinute.resetsAt.toISOString() ?? null,
            },
            daily: {
              limit: project.quotaDaily,
              used: usage?.daily.used ?? null,
              resetsAt: usage?.daily.resetsAt.toISOString() ?? null,
            },
          },
        };
      },
    );
  };
}
