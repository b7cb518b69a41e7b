import { Readable } from "node:stream";
import type { SqlPool } from "@postern/db";

/**
 * Reading a stored message's bytes (MessageBody), streamed for `GET /v1/messages/:id/raw`; and
 * whether a message with an id is stored, for HTTP submission's idempotency.
 */

export type StoredBody =
  | { state: "present"; size: number; stream: Readable }
  | { state: "gone" }
  | { state: "missing" };

/**
 * The body is read in slices: MessageBody.data is stored uncompressed out of line (STORAGE
 * EXTERNAL), so PostgreSQL fetches only the TOAST chunks of each slice, and a 25 MiB message is
 * never held whole by the API.
 */
const sliceBytes = 1024 * 1024;

/**
 * The stored bytes of a project's message: `missing` when the project has no such message,
 * `gone` when retention has dropped its body (the sweeper prunes bodies of finished messages).
 */
export async function streamMessageBody(
  sql: Pick<SqlPool, "query">,
  projectId: string,
  messageId: string,
): Promise<StoredBody> {
  const found = await sql.query<{ size: number | null }>(
    `SELECT octet_length(b."data") AS "size" FROM "Message" m
     LEFT JOIN "MessageBody" b ON b."messageId" = m."id"
     WHERE m."id" = $1 AND m."projectId" = $2`,
    [messageId, projectId],
  );
  const row = found.rows[0];
  if (!row) return { state: "missing" };
  if (row.size === null) return { state: "gone" };
  const size = row.size;
  async function* slices() {
    for (let from = 0; from < size; from += sliceBytes) {
      const slice = await sql.query<{ data: Buffer | null }>(
        `SELECT substring("data" FROM $2::int FOR $3::int) AS "data" FROM "MessageBody" WHERE "messageId" = $1`,
        [messageId, from + 1, sliceBytes],
      );
      const data = slice.rows[0]?.data;
      // Pruned while being read: the answer is cut short rather than completed wrongly.
      if (!data) throw new Error(`the body of message ${messageId} was pruned while being read`);
      yield data;
    }
  }
  return { state: "present", size, stream: Readable.from(slices(), { objectMode: false }) };
}

/** Whether the project's message with this id is stored (committed). */
export async function messageStored(
  sql: Pick<SqlPool, "query">,
  projectId: string,
  messageId: string,
): Promise<boolean> {
  const found = await sql.query(`SELECT 1 FROM "Message" WHERE "id" = $1 AND "projectId" = $2`, [
    messageId,
    projectId,
  ]);
  return found.rows.length > 0;
}
