import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** The SMTP front end's metrics, registered on the process registry that GET /metrics serves. */
export function createSmtpMetrics(registry: Registry, sources: { dataMemoryHeld: () => number }) {
  return {
    sessionsActive: new Gauge({
      name: "postern_smtp_sessions_active",
      help: "SMTP sessions currently open",
      registers: [registry],
    }),
    connectionsOpen: new Gauge({
      name: "postern_smtp_connections_open",
      help: "TCP connections held by the SMTP listeners: sessions and TLS handshakes in progress (bounded by SMTP_MAX_CONNECTIONS)",
      registers: [registry],
    }),
    sessionsCut: new Counter({
      name: "postern_smtp_sessions_cut_total",
      help: "SMTP connections ended by a limit, by reason (handshake_timeout, auth_deadline, data_deadline, error_limit)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    sessions: new Counter({
      name: "postern_smtp_sessions_total",
      help: "SMTP sessions opened (outcome opened) and connections refused at TCP accept (too_many, too_many_from_ip), by listener port",
      labelNames: ["listener", "outcome"] as const,
      registers: [registry],
    }),
    auth: new Counter({
      name: "postern_smtp_auth_total",
      help: "SMTP AUTH attempts by outcome (success_cached, success_bcrypt, or the failure reason)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    secretsCompared: new Counter({
      name: "postern_smtp_auth_bcrypt_total",
      help: "bcrypt comparisons of SMTP secrets (AUTH not answered from the cache, for a key that exists): the CPU that AUTH costs",
      registers: [registry],
    }),
    accepted: new Counter({
      name: "postern_smtp_messages_accepted_total",
      help: "Messages stored and answered 250",
      registers: [registry],
    }),
    duplicates: new Counter({
      name: "postern_smtp_messages_duplicate_total",
      help: "Messages answered 250 with the id of the same message accepted within the project's dedupWindowSeconds, and not stored",
      registers: [registry],
    }),
    rejected: new Counter({
      name: "postern_smtp_messages_rejected_total",
      help: "Transactions refused, by reason",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    enqueueFailures: new Counter({
      name: "postern_smtp_enqueue_failures_total",
      help: "Messages stored but not enqueued (the delivery sweeper enqueues them later)",
      registers: [registry],
    }),
    acceptSeconds: new Histogram({
      name: "postern_smtp_accept_duration_seconds",
      help: "From end of DATA to the 250 reply: policy checks, the store transaction and the enqueue",
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    dataMemoryHeld: new Gauge({
      name: "postern_smtp_data_memory_bytes",
      help: "Message bytes the SMTP sessions hold from DATA until stored (bounded by SMTP_DATA_MEMORY)",
      registers: [registry],
      collect() {
        this.set(sources.dataMemoryHeld());
      },
    }),
    dataMemoryWaits: new Counter({
      name: "postern_smtp_data_memory_waits_total",
      help: "Times a session receiving DATA stopped reading because the sessions held SMTP_DATA_MEMORY",
      registers: [registry],
    }),
    inflowHeld: new Counter({
      name: "postern_smtp_inflow_held_total",
      help: "Transactions held at MAIL FROM by in-flow control (delivery jobs waiting at or above SMTP_INFLOW_BACKLOG)",
      registers: [registry],
    }),
    inflowHoldSeconds: new Histogram({
      name: "postern_smtp_inflow_hold_duration_seconds",
      help: "How long in-flow control held a transaction at MAIL FROM, by what ended the hold (backlog, delay, unavailable, shutdown)",
      labelNames: ["ended"] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
  };
}

export type SmtpMetrics = ReturnType<typeof createSmtpMetrics>;
