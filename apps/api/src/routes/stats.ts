import { deliveryLatency } from "@postern/messages";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, errorResponses, projectRouteErrors } from "../errors";
import { replicaRead } from "../replica";
import { isoDate } from "./schemas";

const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;
const floorHour = (date: Date) => new Date(Math.floor(date.getTime() / hourMs) * hourMs);
const ceilHour = (date: Date) => new Date(Math.ceil(date.getTime() / hourMs) * hourMs);
/** Percentiles are computed over at most this many of the window's latest deliveries: bounded cost at any volume. */
const latencySample = 2_000;
/** An hourly series is a point per hour: a chart's worth, not an export. */
const maxSeriesHours = 31 * 24;

const quotaWindow = z.object({
  limit: z.number(),
  used: z.number().nullable(),
  resetsAt: isoDate.nullable(),
});

const statsResponse = z.object({
  from: isoDate.describe("start of the window, rounded down to the hour"),
  to: isoDate.describe("end of the window (exclusive), rounded up to the hour"),
  counts: z.object({
    accepted: z.number().describe("messages accepted (250) in the window, whatever their status now"),
    queued: z.number(),
    deferred: z.number(),
    delivered: z.number(),
    failed: z.number(),
    cancelled: z.number(),
    held: z.number().describe("waiting for approve or deny"),
    denied: z.number(),
    sandboxed: z.number().describe("accepted in sandbox mode, never delivered"),
    rejected: z.number().describe("transactions refused at SMTP (message.rejected audit events)"),
    quotaExceeded: z.number().describe("recipients refused over quota (quota.exceeded audit events)"),
  }),
  series: z
    .array(
      z.object({
        hour: isoDate,
        accepted: z.number(),
        queued: z.number(),
        deferred: z.number(),
        delivered: z.number(),
        failed: z.number(),
        cancelled: z.number(),
        held: z.number(),
        denied: z.number(),
        sandboxed: z.number(),
      }),
    )
    .optional()
    .describe(
      "with `series=hour`: the counts by hour of acceptance, oldest first, one entry per hour of the window (hours with nothing: zeros); each message counted by its status now",
    ),
  rejectedByReason: z.record(z.string(), z.number()),
  deliveryLatencyMs: z
    .object({ p50: z.number(), p90: z.number(), p99: z.number(), sampled: z.number() })
    .nullable()
    .describe("accept to delivery, over the window's latest deliveries (at most 2,000); null when none"),
  quota: z.object({ perMinute: quotaWindow, daily: quotaWindow }),
});

/**
 * `GET /v1/stats`. Counts come from MessageStatsHour (kept by triggers, sharded per connection so
 * that the accept path never waits on a counter row), so they cost ~24 rows × shards whatever the
 * volume; hence the window is counted in whole hours. Rejections and latency are index range scans
 * bounded by the window (latency by a sample size). Query plans: docs/api.md.
 */
export function statsRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/stats",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "Counts by status and rejection reason, delivery latency and quota usage for a window",
          security: [{ bearer: [] }],
          querystring: z.object({
            from: z.coerce.date().optional().describe("default: 24 hours before `to`"),
            to: z.coerce.date().optional().describe("default: now"),
            series: z
              .literal("hour")
              .optional()
              .describe(`also the counts hour by hour (a window of at most ${maxSeriesHours / 24} days)`),
          }),
          response: {
            200: statsResponse,
            ...errorResponses(...projectRouteErrors, "replica_unavailable"),
          },
        },
      },
      async (request) => {
        const projectId = request.project.id;
        const to = ceilHour(request.query.to ?? new Date());
        const from = floorHour(request.query.from ?? new Date(to.getTime() - dayMs));
        if (request.query.from && request.query.to && request.query.from >= request.query.to) {
          throw new ApiError("validation_error", "querystring.from: must be before `to`");
        }

        if (request.query.series && to.getTime() - from.getTime() > maxSeriesHours * hourMs) {
          throw new ApiError(
            "validation_error",
            `querystring.series: the window must be at most ${maxSeriesHours / 24} days for an hourly series`,
          );
        }

        // The history from the replica; the project's quota limits, which the client may just have
        // changed, from the primary.
        const [byStatus, rejections, latency, project] = await Promise.all([
          deps.reads.$queryRaw<{ hour: Date; status: string; n: number }[]>`
            SELECT hour, status::text AS status, sum(count)::int AS n FROM "MessageStatsHour"
            WHERE "projectId" = ${projectId}::uuid AND hour >= ${from} AND hour < ${to}
            GROUP BY hour, status`,
          deps.reads.$queryRaw<{ action: string; reason: string; n: number }[]>`
            SELECT action, coalesce(details->>'reason', 'unspecified') AS reason, count(*)::int AS n
            FROM "AuditEvent"
            WHERE "projectId" = ${projectId}::uuid AND action IN ('message.rejected', 'quota.exceeded')
              AND "createdAt" >= ${from} AND "createdAt" < ${to}
            GROUP BY 1, 2`,
          deliveryLatency(deps.reads, { projectId, from, to, sample: latencySample }),
          deps.db.project.findUniqueOrThrow({
            where: { id: projectId },
            select: { quotaPerMinute: true, quotaDaily: true },
          }),
        ]);

        const status: Record<string, number> = {};
        for (const row of byStatus) status[row.status] = (status[row.status] ?? 0) + row.n;
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
        const sample = latency;
        // Quota usage is live state in Redis; stats still answer (used: null) when Redis does not.
        const usage = await deps.quotaUsage({ id: projectId, ...project }).catch((error: Error) => {
          request.log.warn({ err: error }, "quota usage unavailable");
          return undefined;
        });
        return {
          from: from.toISOString(),
          to: to.toISOString(),
          counts: {
            accepted: byStatus.reduce((sum, row) => sum + row.n, 0),
            queued: status.queued ?? 0,
            deferred: status.deferred ?? 0,
            delivered: status.delivered ?? 0,
            failed: status.failed ?? 0,
            cancelled: status.cancelled ?? 0,
            held: status.held ?? 0,
            denied: status.denied ?? 0,
            sandboxed: status.sandboxed ?? 0,
            rejected,
            quotaExceeded,
          },
          series: request.query.series ? hourlySeries(from, to, byStatus) : undefined,
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
              resetsAt: usage?.perMinute.resetsAt?.toISOString() ?? null,
            },
            daily: {
              limit: project.quotaDaily,
              used: usage?.daily.used ?? null,
              resetsAt: usage?.daily.resetsAt?.toISOString() ?? null,
            },
          },
        };
      },
    );
  };
}

const seriesStatuses = [
  "queued",
  "deferred",
  "delivered",
  "failed",
  "cancelled",
  "held",
  "denied",
  "sandboxed",
] as const;

/** One entry per hour of [from, to), zeros where nothing was accepted: what a chart plots as is. */
function hourlySeries(from: Date, to: Date, rows: { hour: Date; status: string; n: number }[]) {
  const byHour = new Map<number, Record<string, number>>();
  for (const row of rows) {
    const counts = byHour.get(row.hour.getTime()) ?? {};
    counts[row.status] = (counts[row.status] ?? 0) + row.n;
    byHour.set(row.hour.getTime(), counts);
  }
  const series = [];
  for (let at = from.getTime(); at < to.getTime(); at += hourMs) {
    const counts = byHour.get(at) ?? {};
    const entry = { hour: new Date(at).toISOString(), accepted: 0 } as Record<string, number | string> & {
      accepted: number;
    };
    for (const status of seriesStatuses) {
      entry[status] = counts[status] ?? 0;
      entry.accepted += counts[status] ?? 0;
    }
    series.push(entry);
  }
  return series as Array<
    { hour: string; accepted: number } & Record<(typeof seriesStatuses)[number], number>
  >;
}
