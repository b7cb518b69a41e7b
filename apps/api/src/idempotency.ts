import type { SqlPool } from "@postern/db";

/**
 * `Idempotency-Key` of HTTP submission, kept in PostgreSQL (table IdempotencyKey) for 24 h.
 *
 * A key is claimed BEFORE its message is stored, naming the id the message will be stored
 * under; the Message's primary key then makes the key yield one message at most:
 * - a second request with the key finds the claim; if that message is stored it answers its id,
 *   otherwise (the first is still being stored, was refused, or its process died between claim
 *   and commit) it stores the message itself under the same id, and whichever insert comes second
 *   fails on the primary key and answers the id the first stored (within one process, it waits
 *   for the request storing that id instead: routes/submission.ts);
 * - a crash between the message's commit and the answer leaves claim and message committed: the
 *   client's retry answers the stored id.
 * PostgreSQL rather than Redis: the claim must be as durable as the message it guards (a Redis
 * that lost a key after a crash, or runs without persistence, would let a retry store a second
 * message), and the claim-then-store order needs no transaction across the two stores.
 */

export const idempotencyWindowHours = 24;

export type IdempotencyClaim =
  /** The key is new (or its previous use is older than the window): store the message as `messageId`. */
  | { state: "claimed"; messageId: string }
  /** The key was used for this same request: its message is (or is to be) `messageId`. */
  | { state: "replay"; messageId: string }
  /** The key was used within the window for another request. */
  | { state: "reused" };

/** Claims `key` for a request (its SHA-256), proposing `messageId` for its message. */
export async function claimIdempotencyKey(
  sql: Pick<SqlPool, "query">,
  input: { projectId: string; key: string; requestSha256: string; messageId: string },
): Promise<IdempotencyClaim> {
  const { projectId, key, requestSha256, messageId } = input;
  // A use older than the window is replaced as if the key were new. Timestamps are UTC without
  // time zone, as Prisma writes them.
  const claimed = await sql.query(
    `INSERT INTO "IdempotencyKey" ("projectId", "key", "requestSha256", "messageId", "createdAt")
     VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC')
     ON CONFLICT ("projectId", "key") DO UPDATE
       SET "requestSha256" = EXCLUDED."requestSha256", "messageId" = EXCLUDED."messageId", "createdAt" = EXCLUDED."createdAt"
       WHERE "IdempotencyKey"."createdAt" < (now() AT TIME ZONE 'UTC') - make_interval(hours => $5)
     RETURNING 1`,
    [projectId, key, requestSha256, messageId, idempotencyWindowHours],
  );
  if (claimed.rows.length > 0) return { state: "claimed", messageId };
  const existing = await sql.query<{ requestSha256: string; messageId: string }>(
    `SELECT "requestSha256", "messageId" FROM "IdempotencyKey" WHERE "projectId" = $1 AND "key" = $2`,
    [projectId, key],
  );
  const row = existing.rows[0];
  // Pruned between the two statements: the window has passed, so the key is new again.
  if (!row) return claimIdempotencyKey(sql, input);
  if (row.requestSha256 !== requestSha256) return { state: "reused" };
  return { state: "replay", messageId: row.messageId };
}

/** Deletes keys past the window, at most `batch` of them; returns how many it deleted. */
export async function pruneIdempotencyKeys(sql: Pick<SqlPool, "query">, batch = 10_000): Promise<number> {
  const deleted = await sql.query(
    `DELETE FROM "IdempotencyKey" WHERE ctid IN (
       SELECT ctid FROM "IdempotencyKey"
       WHERE "createdAt" < (now() AT TIME ZONE 'UTC') - make_interval(hours => $1) LIMIT $2)`,
    [idempotencyWindowHours, batch],
  );
  return deleted.rowCount ?? 0;
}

const pruneIntervalMs = 10 * 60_000;

/**
 * Prunes expired keys now and then every 10 minutes until stopped, in batches until none is left;
 * failures are logged, not fatal (an expired key is replaced when it is used again anyway).
 */
export function scheduleIdempotencyPruning(
  sql: Pick<SqlPool, "query">,
  onError: (error: Error) => void,
): () => void {
  const batch = 10_000;
  const run = async () => {
    while ((await pruneIdempotencyKeys(sql, batch)) === batch) {}
  };
  const timer = setInterval(() => run().catch(onError), pruneIntervalMs);
  timer.unref();
  run().catch(onError);
  return () => clearInterval(timer);
}
