import { createRequire } from "node:module";
import { isMainThread } from "node:worker_threads";
import type { Registry } from "prom-client";

// prom-client is loaded by the first registry made, not by importing this module: operator
// commands import the telemetry package for its logger and serve no metrics.
const load = createRequire(import.meta.url);

/**
 * prom-client's default metrics that describe the whole process, not the thread that reads them:
 * its memory, CPU time and file descriptors. A worker thread of `postern start` leaves them to the
 * main thread; /metrics adds the threads' registries up, and each thread would otherwise report the
 * process's resident memory again (an idle all-in-one process of 150 MiB showed 300).
 */
const processWide = [
  "process_cpu_user_seconds_total",
  "process_cpu_system_seconds_total",
  "process_cpu_seconds_total",
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
  "process_start_time_seconds",
];

/**
 * One registry per process (per thread: see `processWide`): roles running in the same process
 * register their metrics on it and GET /metrics serves all of them. Metric names are prefixed
 * `postern_`.
 */
export function createMetricsRegistry(): Registry {
  const { collectDefaultMetrics, Registry } = load("prom-client") as typeof import("prom-client");
  const prefix = "postern_";
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix });
  if (!isMainThread) for (const name of processWide) registry.removeSingleMetric(`${prefix}${name}`);
  return registry;
}

export type { Registry } from "prom-client";
