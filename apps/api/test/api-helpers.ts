import { randomUUID } from "node:crypto";
import { buildApi } from "@postern/api";
import type { Database, MessageStatus } from "@postern/db";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import type { TestContext } from "@postern/testkit";

export function apiFor(ctx: TestContext, extra: Partial<Parameters<typeof buildApi>[0]> = {}) {
  return buildApi({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
    ...extra,
  });
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A message row as the SMTP and delivery roles would leave it (those roles are tested apart). */
export async function insertMessage(
  db: Database,
  projectId: string,
  input: {
    status?: MessageStatus;
    mailFrom?: string;
    createdAt?: Date;
    deliveredAt?: Date;
    recipients?: { address: string; status?: "pending" | "delivered" | "failed"; code?: number }[];
    attempts?: { outcome: "delivered" | "deferred" | "failed"; code: number; response: string }[];
    subject?: string;
  } = {},
) {
  const id = randomUUID();
  const createdAt = input.createdAt ?? new Date();
  await db.message.create({
    data: {
      id,
      projectId,
      mailFrom: input.mailFrom ?? "app@example.com",
      subject: input.subject ?? "Hello",
      headerMessageId: `<${id}@example.com>`,
      size: 1234,
      sha256: "0".repeat(64),
      status: input.status ?? "queued",
      attempts: input.attempts?.length ?? 0,
      createdAt,
      deliveredAt: input.deliveredAt,
      recipients: {
        create: (input.recipients ?? [{ address: "user@example.net" }]).map((r) => ({
          address: r.address,
          status: r.status ?? "pending",
          code: r.code,
        })),
      },
      deliveryAttempts: {
        create: (input.attempts ?? []).map((a, i) => ({
          number: i + 1,
          startedAt: new Date(createdAt.getTime() + i * 1000),
          durationMs: 120,
          upstreamHost: "mx.example.net",
          outcome: a.outcome,
          code: a.code,
          enhancedCode: a.code >= 500 ? "5.1.1" : a.code >= 400 ? "4.2.0" : "2.0.0",
          response: a.response,
        })),
      },
    },
  });
  return id;
}
