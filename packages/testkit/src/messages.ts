import { createHash } from "node:crypto";
import { recordAudit } from "@postern/audit";
import type { Database, Message, Project } from "@postern/db";

export interface QueuedMessageInput {
  from?: string;
  to?: string[];
  /** The bytes to forward; by default a small message with a Received header. */
  raw?: Buffer | string;
}

/**
 * What the SMTP accept step stores in one transaction: Message (queued), its body, one pending
 * MessageRecipient per envelope recipient and the `message.accepted` audit event.
 */
export async function createQueuedMessageFixture(
  db: Database,
  project: Pick<Project, "id">,
  input: QueuedMessageInput = {},
): Promise<Message> {
  const from = input.from ?? "sender@example.com";
  const to = input.to ?? ["rcpt@example.net"];
  const raw = Buffer.isBuffer(input.raw)
    ? input.raw
    : Buffer.from(
        input.raw ??
          [
            "Received: from client by postern.test; Sat, 21 Nov 2026 12:00:00 +0000",
            `From: <${from}>`,
            `To: ${to.map((address) => `<${address}>`).join(", ")}`,
            "Subject: fixture",
            "Message-ID: <fixture@example.com>",
            "",
            "Hello.",
            "",
          ].join("\r\n"),
      );
  return db.$transaction(async (tx) => {
    const message = await tx.message.create({
      data: {
        projectId: project.id,
        mailFrom: from,
        subject: "fixture",
        size: raw.length,
        sha256: createHash("sha256").update(raw).digest("hex"),
        body: { create: { data: new Uint8Array(raw) } },
        recipients: { create: to.map((address) => ({ address })) },
      },
    });
    await recordAudit(tx, {
      action: "message.accepted",
      actor: "system",
      projectId: project.id,
      details: { messageId: message.id, recipients: to.length },
    });
    return message;
  });
}
