import type { SqlPool } from "@postern/db";
import { lifecycleActions, sqlList } from "./transitions";

/*
 * The delivery sweeper's statements (apps/worker/src/sweeper.ts), raw SQL over the process's pool
 * as the delivery store's: these were the delivery process's only Prisma queries, and the first
 * of them loaded Prisma's query compiler, tens of MB of the worker process's RSS
 * (docs/benchmarks-history.md, Third round). Timestamps cross as ISO strings cast to
 * `timestamp(3)`: the columns hold UTC without a zone.
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

/**
 * Only finished messages: a pending (or held) message's body is the only copy of mail we accepted.
 */
const pruneSql = `
DELETE FROM "MessageBody" b USING "Message" m
WHERE m."id" = b."messageId" AND b."createdAt" < $1::timestamp(3)
  AND m."status" IN ('delivered', 'failed', 'cancelled', 'denied', 'sandboxed')`;

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

const heldStatuses = sqlList(lifecycleActions.approve.from);

/**
 * Up to `sweepPageSize` held messages older than their project's `holdTtlMinutes`, settled as the
 * project's `holdExpiry` says in ONE statement: approved (→ queued, an attempt due now) or denied
 * (→ denied, final), each with its `message.approved` / `message.denied` event and audit event
 * (actor `system`, `expired: true`), as an approve or deny by hand writes them. Each project's
 * held messages are read oldest first from the ("projectId", "status", "createdAt") index. The
 * guard on the status makes a concurrent approve, deny or cancel win: that message is not settled
 * again.
 */
const expireHoldsSql = `
WITH due AS (
  SELECT m."id", p."holdExpiry"
  FROM "Project" p
  CROSS JOIN LATERAL (
    SELECT "id" FROM "Message"
    WHERE "projectId" = p."id" AND "status" IN (${heldStatuses})
      AND "createdAt" < $1::timestamp(3) - make_interval(mins => p."holdTtlMinutes")
    ORDER BY "createdAt"
    LIMIT ${sweepPageSize}
  ) m
  LIMIT ${sweepPageSize}
), changed AS (
  UPDATE "Message" u
  SET "status" = CASE d."holdExpiry" WHEN 'approve' THEN 'queued' ELSE 'denied' END::"MessageStatus",
      "nextAttemptAt" = CASE d."holdExpiry" WHEN 'approve' THEN $1::timestamp(3) END,
      "completedAt" = CASE d."holdExpiry" WHEN 'approve' THEN NULL ELSE $1::timestamp(3) END,
      "updatedAt" = $1::timestamp(3)
  FROM due d
  WHERE u."id" = d."id" AND u."status" IN (${heldStatuses})
  RETURNING u."id", u."projectId", d."holdExpiry"
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", CASE c."holdExpiry" WHEN 'approve' THEN 'message.approved' ELSE 'message.denied' END,
         $1::timestamp(3), '{"expired": true}'::jsonb
  FROM changed c
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT $1::timestamp(3), c."projectId", 'system', CASE c."holdExpiry" WHEN 'approve' THEN 'message.approved' ELSE 'message.denied' END,
         NULL, jsonb_build_object('messageId', c."id", 'expired', true)
  FROM changed c
)
SELECT "id", "projectId", "holdExpiry"::text AS "settledAs" FROM changed`;

export interface ExpiredHold {
  id: string;
  projectId: string;
  /** `approve`: the message is queued and needs its delivery job; `deny`: it is final. */
  settledAs: "approve" | "deny";
}

/** Settles a batch of held messages past their project's hold time (at most `sweepPageSize`). */
export async function expireHolds(sql: Pick<SqlPool, "query">, now: Date): Promise<ExpiredHold[]> {
  const { rows } = await sql.query<ExpiredHold>({
    name: "postern-expire-holds",
    text: expireHoldsSql,
    values: [now.toISOString()],
  });
  return rows;
}
