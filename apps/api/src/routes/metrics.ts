import type { Registry } from "@postern/telemetry";
import type { FastifyInstance } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { Histogram } from "prom-client";
import { z } from "zod";
import { metricsTokenAuth } from "../auth";
import { errorResponses } from "../errors";

const httpDurationName = "postern_http_request_duration_seconds";

/** What `/metrics` serves: a prom-client Registry, or one that merges several threads' registries. */
export interface MetricsExposition {
  contentType: string;
  metrics(): Promise<string>;
}

/**
 * `GET /metrics` serves the process's one registry, so the SMTP and delivery roles' metrics appear
 * here when they run in the same process (or in worker threads of `postern start`, merged
 * in); the API adds its request latency by route. With `token` (METRICS_TOKEN) set, a scraper
 * must send it as a bearer token: the metrics name projects' activity and the process's state.
 */
export function metricsRoutes(
  registry: MetricsExposition,
  options: { token?: string },
): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/metrics",
      {
        ...(options.token ? { onRequest: metricsTokenAuth(options.token) } : {}),
        schema: {
          tags: ["health"],
          summary: "Prometheus metrics (a bearer token when METRICS_TOKEN is set)",
          ...(options.token ? { security: [{ metrics: [] }] } : {}),
          response: {
            200: z.string(),
            ...errorResponses("validation_error", "unauthorized", "internal_error"),
          },
        },
      },
      async (_request, reply) => {
        reply.type(registry.contentType);
        return registry.metrics();
      },
    );
  };
}

/** Observes every request's latency; installed on the root instance so that it sees every route. */
export function installHttpMetrics(app: FastifyInstance, registry: Registry): void {
  // Several API instances in one process (tests) share the registry: register once.
  const duration =
    (registry.getSingleMetric(httpDurationName) as Histogram<"method" | "route" | "status"> | undefined) ??
    new Histogram({
      name: httpDurationName,
      help: "HTTP request latency by route (the route pattern, not the URL, to bound cardinality)",
      labelNames: ["method", "route", "status"] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });

  app.addHook("onResponse", async (request, reply) => {
    duration.observe(
      {
        method: request.method,
        route: request.routeOptions.url ?? "unmatched",
        status: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });
}
