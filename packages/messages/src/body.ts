import type { MessageReader } from "./project-messages";

export type MessageBodyResult =
  | { found: false }
  /** `data` null: retention has dropped the bytes (the message row stays). */
  | { found: true; data: Buffer | null };

/** The stored bytes of a project's message, as received (with Postern's Received header). */
export async function readMessageBody(
  db: MessageReader,
  projectId: string,
  messageId: string,
): Promise<MessageBodyResult> {
  const rows = await db.$queryRaw<{ data: Uint8Array | null }[]>`
SELECT b."data" FROM "Message" m LEFT JOIN "MessageBody" b ON b."messageId" = m."id"
WHERE m."id" = ${messageId}::uuid AND m."projectId" = ${projectId}::uuid`;
  const row = rows[0];
  if (!row) return { found: false };
  return { found: true, data: row.data ? Buffer.from(row.data) : null };
}
