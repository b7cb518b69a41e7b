import type { OutboxEvent } from "@postern/messages";

/**
 * What a webhook POSTs: the event object of CONTRACT §9, its fields at the top level. `data`
 * always has `recipients` as objects (`{address, status, code, enhancedCode, response}`): the
 * outbox keeps a `message.accepted`'s recipients as bare addresses (they have no result yet), and
 * events without per-recipient results (`message.cancelled`, `.retried`…) have none.
 */
export interface WebhookEvent {
  id: string;
  type: string;
  createdAt: string;
  projectId: string;
  messageId: string | null;
  data: Record<string, unknown> & { recipients: WebhookRecipient[] };
}

export interface WebhookRecipient {
  address: string;
  status: string;
  code: number | null;
  enhancedCode: string | null;
  response: string | null;
}

/** The type of the event `POST /v1/webhooks/:id/test` sends, whatever the endpoint subscribes to. */
export const testEventType = "webhook.test";

function recipientOf(value: unknown, status: string): WebhookRecipient {
  if (typeof value === "string")
    return { address: value, status, code: null, enhancedCode: null, response: null };
  const r = (value ?? {}) as Partial<WebhookRecipient> & Record<string, unknown>;
  return {
    ...r,
    address: String(r.address ?? ""),
    status: String(r.status ?? status),
    code: r.code ?? null,
    enhancedCode: r.enhancedCode ?? null,
    response: r.response ?? null,
  };
}

export function webhookEventOf(event: OutboxEvent): WebhookEvent {
  const data = (event.data ?? {}) as Record<string, unknown>;
  // An accepted message's recipients wait for delivery (`pending`); a held one's for a decision.
  const status = event.type === "message.held" ? "held" : "pending";
  const recipients = Array.isArray(data.recipients) ? data.recipients.map((r) => recipientOf(r, status)) : [];
  return {
    id: event.id.toString(),
    type: event.type,
    createdAt: event.createdAt.toISOString(),
    projectId: event.projectId,
    messageId: event.messageId,
    data: { ...data, recipients },
  };
}

export function testEvent(id: string, projectId: string, now = new Date()): WebhookEvent {
  return {
    id,
    type: testEventType,
    createdAt: now.toISOString(),
    projectId,
    messageId: null,
    data: { test: true, recipients: [] },
  };
}

/**
 * The body POSTed: the stored event (PostgreSQL's jsonb reorders keys) in the contract's order, as
 * compact JSON; the signature covers exactly these bytes.
 */
export function webhookBody(event: WebhookEvent): string {
  const { id, type, createdAt, projectId, messageId, data } = event;
  return JSON.stringify({ id, type, createdAt, projectId, messageId, data });
}
