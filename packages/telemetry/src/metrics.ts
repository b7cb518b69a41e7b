import { collectDefaultMetrics, Registry } from "prom-client";

/**
 * One registry per process: roles running in the same process register their metrics on it and
 * GET /metrics serves all of them. Metric names are prefixed `postern_`.
 */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "postern_" });
  return registry;
}

export type { Registry } from "prom-client";
