import type { SqlPool } from "@postern/db";

/*
 * The delivery sweeper's statements (apps/worker/src/sweeper.ts), raw SQL over the process's pool
 * as the delivery store's: these were the delivery process's only Prisma queries, and the first
 * of them loaded Prisma's query compiler, about 65 MB of the worker process's RSS
 * (docs/benchmarks.md). Timestamps cross as ISO strings cast to `timestamp(3)`: the columns hold
 * UTC without a zone.
 */

export const sweepPageSize = 1000;

/**
 * Messages that must have a job: queued, or deferred with the retry due; by id, after a cursor.
 * Only messages accepted before `$3`, one sweep interval ago: a message committed a moment ago
 * may not have its job yet, and a job of its own added then would put it in two jobs at once
 * (the job id, the message id, prevented that when every job carried one message).
 */
const dueSql = `
SELECT "id", "projectId", "deliveryJobId" FROM "Message"
WHERE ("status" = 'queued' OR ("status" = 'deferred' AND "nextAttemptAt" <= $1::timestamp(3)))
  AND ($2::uuid IS NULL OR "id" > $2::uuid) AND "createdAt" < $3::timestamp(3)
ORDER BY "id" LIMIT ${sweepPageSize}`;

export interface DueMessage {
  id: string;
  projectId: string;
  deliveryJobId: string | null;
}

/** A page of `sweepPageSize` due messages with ids after `after` (null: from the start). */
export async function dueMessages(
  sql: Pick<SqlPool, "query">,
  page: { now: Date; after: string | null; acceptedBefore: Date },
): Promise<DueMessage[]> {
  const { rows } = await sql.query<DueMessage>(dueSql, [
    page.now.toISOString(),
    page.after,
    page.acceptedBefore.toISOString(),
  ]);
  return rows;
}

const backlogSql = `
SELECT "projectId", count(*)::int AS "count" FROM "Message" WHERE "status" = 'queued' GROUP BY "projectId"`;

/** Queued messages by project: the fairness backlog counts' truth. */
export async function queuedBacklog(sql: Pick<SqlPool, "query">): Promise<Map<string, number>> {
  const { rows } = await sql.query<{ projectId: string; count: number }>(backlogSql);
  return new Map(rows.map((row) => [row.projectId, row.count]));
}

/** Only finished messages: a pending message's body is the only copy of mail we accepted. */
const pruneSql = `
DELETE FROM "MessageBody" b USING "Message" m
WHERE m."id" = b."messageId" AND b."createdAt" < $1::timestamp(3) AND m."status" IN ('delivered', 'failed', 'cancelled')`;

/** Deletes the bodies of finished messages stored before `before`; returns how many. */
export async function pruneBodies(sql: Pick<SqlPool, "query">, before: Date): Promise<number> {
  return (await sql.query(pruneSql, [before.toISOString()])).rowCount ?? 0;
}

const oldestPendingSql = `SELECT (extract(epoch FROM min("createdAt")) * 1000)::float8 AS "oldestMs"
         FROM "Message" WHERE "status" IN ('queued', 'deferred')`;

/** When the oldest queued or deferred message was accepted (ms since the epoch), or null. */
export async function oldestPendingAcceptedAt(sql: Pick<SqlPool, "query">): Promise<number | null> {
  const { rows } = await sql.query<{ oldestMs: number | null }>(oldestPendingSql);
  return rows[0]?.oldestMs ?? null;
}
