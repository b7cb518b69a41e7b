import type { SqlPool } from "@postern/db";
import { oldestPendingAcceptedAt } from "@postern/messages";
import type { DeliveryJob } from "@postern/queue";
import type { DestinationThrottle, UpstreamTransports } from "@postern/relay";
import type { Registry } from "@postern/telemetry";
import type { Queue } from "bullmq";
import { Counter, Gauge, Histogram } from "prom-client";

/** Series of `postern_destination_concurrency_limit` at most, the most throttled first. */
const throttledDestinationsShown = 50;

export interface DeliveryMetrics {
  attempts: Counter<"outcome">;
  latency: Histogram;
  givenBack: Counter<"reason">;
  /** MX look-ups of direct delivery, answered from the cache (hit) or from DNS (miss). */
  mxLookups: Counter<"outcome">;
}

/**
 * Delivery metrics on the process registry: attempts by outcome, accept → delivered latency,
 * queue depth by state, messages queued, deliveries waiting for one of their project's connections and the age of the
 * oldest message still waiting for delivery. The gauges are read when Prometheus scrapes, not
 * kept up to date on the hot path.
 */
export function registerDeliveryMetrics(
  registry: Registry,
  sources: {
    queue: Queue<DeliveryJob>;
    sql: Pick<SqlPool, "query">;
    transports: UpstreamTransports;
    throttle: DestinationThrottle;
    /** `countQueuedMessages`: every project's backlog added up, the queue's size at a glance. */
    queuedMessages: () => Promise<number>;
  },
): DeliveryMetrics {
  const mxLookups = new Counter({
    name: "postern_mx_lookups_total",
    help: "MX look-ups of direct delivery by outcome: hit (from the TTL-bound cache) or miss (asked DNS)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const attempts = new Counter({
    name: "postern_delivery_attempts_total",
    help: "Delivery attempts by outcome (delivered, deferred, failed)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const latency = new Histogram({
    name: "postern_delivery_latency_seconds",
    help: "Time from acceptance (250) to delivery at the upstream",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400],
    registers: [registry],
  });
  const givenBack = new Counter({
    name: "postern_delivery_given_back_total",
    help: "Deliveries given back to the queue without an attempt for want of a connection: project_busy (its connections busy and not turning over), upstream_busy (DELIVERY_UPSTREAM_CONCURRENCY), upstream_probing (a suspended upstream being probed), destination_busy (the destination's concurrency limit), destination_rate (its rate per minute)",
    labelNames: ["reason"],
    registers: [registry],
  });
  new Gauge({
    name: "postern_delivery_suspended_upstreams",
    help: "Upstreams this process does not connect to for now (circuit open after DELIVERY_CIRCUIT_FAILURES failures to connect), or is probing",
    registers: [registry],
    collect() {
      this.set(sources.transports.suspendedUpstreams());
    },
  });
  new Gauge({
    name: "postern_destination_concurrency_limit",
    help: `Concurrency limit of each destination lowered after it answered 421 or 4.7.x (all workers), until it recovers; the ${throttledDestinationsShown} lowest only`,
    labelNames: ["destination"],
    registers: [registry],
    async collect() {
      const lowered = [...(await sources.throttle.loweredLimits())].sort((a, b) => a[1] - b[1]);
      // Destinations are recipient domains, which senders choose: the series are bounded.
      this.reset();
      for (const [destination, limit] of lowered.slice(0, throttledDestinationsShown))
        this.set({ destination }, limit);
    },
  });
  new Gauge({
    name: "postern_destinations_throttled",
    help: "Destinations whose concurrency limit is lowered now (all workers)",
    registers: [registry],
    async collect() {
      this.set((await sources.throttle.loweredLimits()).size);
    },
  });
  new Gauge({
    name: "postern_delivery_queue_jobs",
    help: "Delivery jobs by state (waiting, delayed, active)",
    labelNames: ["state"],
    registers: [registry],
    async collect() {
      const counts = await sources.queue.getJobCounts("waiting", "prioritized", "delayed", "active");
      this.set({ state: "waiting" }, (counts.waiting ?? 0) + (counts.prioritized ?? 0));
      this.set({ state: "delayed" }, counts.delayed ?? 0);
      this.set({ state: "active" }, counts.active ?? 0);
    },
  });
  new Gauge({
    name: "postern_delivery_queued_messages",
    help: "Messages waiting for a delivery worker, all projects' backlogs added up; retries waiting for their time are not in it (in-flow control compares each project's own backlog with SMTP_INFLOW_BACKLOG, not this total)",
    registers: [registry],
    async collect() {
      this.set(await sources.queuedMessages());
    },
  });
  new Gauge({
    name: "postern_delivery_waiting_for_connection",
    help: "Deliveries of this process waiting for one of their project's upstream connections (DELIVERY_PROJECT_CONCURRENCY)",
    registers: [registry],
    collect() {
      this.set(sources.transports.waitingForConnection());
    },
  });
  new Gauge({
    name: "postern_delivery_oldest_pending_seconds",
    help: "Age of the oldest queued or deferred message (0 when none)",
    registers: [registry],
    async collect() {
      const oldestMs = await oldestPendingAcceptedAt(sources.sql);
      this.set(oldestMs ? (Date.now() - oldestMs) / 1000 : 0);
    },
  });
  return { attempts, latency, givenBack, mxLookups };
}
