import { createHash, randomBytes } from "node:crypto";
import type { AuthenticatedClient } from "@postern/auth";
import type { Database } from "@postern/db";
import type { DeliveryProducer } from "@postern/queue";
import type { Logger } from "@postern/telemetry";
import type { HeaderSummary } from "./message";

export interface MessageToAccept {
  id: string;
  client: AuthenticatedClient;
  ip: string;
  mailFrom: string;
  recipients: string[];
  /** The bytes as they will be delivered (trace header included). */
  bytes: Buffer;
  headers: HeaderSummary;
}

export type AcceptOutcome =
  | { ok: true; enqueued: boolean }
  | { ok: false; reason: "store_unavailable"; error: Error };

/**
 * The durability point. Message, body, one row per recipient and the `message.accepted` audit
 * event commit in ONE transaction: after it, the message survives any crash, so 250 may be sent.
 * The delivery job is added afterwards with jobId = message id (idempotent); if that fails the
 * message is still accepted: the delivery sweeper re-enqueues queued messages that have no job.
 */
export async function acceptMessage(
  deps: { db: Database; producer: DeliveryProducer; log: Logger },
  message: MessageToAccept,
): Promise<AcceptOutcome> {
  const { client } = message;
  try {
    await deps.db.$transaction([
      deps.db.message.create({
        data: {
          id: message.id,
          projectId: client.project.id,
          credentialId: client.credentialId,
          mailFrom: message.mailFrom,
          headerMessageId: message.headers.messageId ?? null,
          subject: message.headers.subject ?? null,
          size: message.bytes.length,
          sha256: createHash("sha256").update(message.bytes).digest("hex"),
          body: { create: { data: new Uint8Array(message.bytes) } },
          recipients: { createMany: { data: message.recipients.map((address) => ({ address })) } },
        },
        select: { id: true },
      }),
      deps.db.auditEvent.create({
        data: {
          action: "message.accepted",
          actor: `smtp:${client.key}`,
          projectId: client.project.id,
          ip: message.ip,
          details: {
            messageId: message.id,
            mailFrom: message.mailFrom,
            recipients: message.recipients,
            size: message.bytes.length,
            headerMessageId: message.headers.messageId ?? null,
          },
        },
        select: { id: true },
      }),
    ]);
  } catch (error) {
    return { ok: false, reason: "store_unavailable", error: error as Error };
  }
  try {
    await deps.producer.enqueue({ id: message.id, projectId: client.project.id });
    return { ok: true, enqueued: true };
  } catch (error) {
    deps.log.warn(
      { err: error, messageId: message.id },
      "message stored but not enqueued; the delivery sweeper will enqueue it",
    );
    return { ok: true, enqueued: false };
  }
}

/**
 * A UUIDv7 (RFC 9562 5.7): time-ordered like the ids Prisma generates for the other rows, and
 * known before the insert so the Received header can carry it.
 */
export function newMessageId(now = Date.now()): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
