import { Counter, Gauge, type Registry } from "prom-client";

/** The inbound role's metrics, on the process registry that GET /metrics serves. */
export function createInboundMetrics(registry: Registry) {
  return {
    // The connection gate and the session limits of @postern/smtp count into these three.
    connectionsOpen: new Gauge({
      name: "postern_inbound_connections_open",
      help: "TCP connections held by the inbound listener (bounded by SMTP_MAX_CONNECTIONS)",
      registers: [registry],
    }),
    sessions: new Counter({
      name: "postern_inbound_sessions_total",
      help: "Inbound sessions opened (outcome opened) and connections refused at TCP accept (too_many, too_many_from_ip)",
      labelNames: ["listener", "outcome"] as const,
      registers: [registry],
    }),
    sessionsCut: new Counter({
      name: "postern_inbound_sessions_cut_total",
      help: "Inbound connections ended by a limit, by reason (handshake_timeout, data_deadline, error_limit)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    refused: new Counter({
      name: "postern_inbound_recipients_refused_total",
      help: "RCPT refused by the inbound role, by reason (other_domain: no open relay; forged: a return path this server did not issue; unknown_message; no_mailbox)",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    reports: new Counter({
      name: "postern_inbound_reports_total",
      help: "Messages the inbound role received, by outcome (bounced, complained, duplicate, delayed, not_failed, not_a_complaint, not_delivered, retry_later, unmatched, too_big, store_unavailable)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    unmatched: new Counter({
      name: "postern_inbound_unmatched_total",
      help: "Messages the inbound role accepted without matching them to a message and recipient (audited as inbound.unmatched), by reason",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
  };
}

export type InboundMetrics = ReturnType<typeof createInboundMetrics>;
