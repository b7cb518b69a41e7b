import { type MessageStatus, Prisma } from "@postern/db";
import { type MessageFilter, messageFilterSql, utc } from "./message-filter";
import type { MessageActionResult, MessageReader } from "./project-messages";
import { checkAction, type LifecycleAction, lifecycleActions, sqlList } from "./transitions";

/** The single-message actions that only move the status (a retry also makes recipients pending). */
export type StatusAction = Exclude<LifecycleAction, "retry">;

/** The columns a message moving to `to` gets: an attempt now for `queued`, none for a final status. */
function statusChange(to: MessageStatus, at: Prisma.Sql): Prisma.Sql {
  return to === "queued"
    ? Prisma.sql`"status" = 'queued', "nextAttemptAt" = ${at}, "completedAt" = NULL, "updatedAt" = ${at}`
    : Prisma.sql`"status" = ${to}::"MessageStatus", "nextAttemptAt" = NULL, "completedAt" = ${at}, "updatedAt" = ${at}`;
}

/**
 * Cancels (queued, deferred, held → cancelled), approves (held → queued) or denies (held → denied)
 * a project's message, as `lifecycleActions` allows from its status. ONE statement: the guarded
 * update, the action's audit event and its message event (`message.cancelled`, `.approved`,
 * `.denied`), as `retryMessage` does. `data` goes into the event (the hold expiry says so). A
 * delivery job already queued for a cancelled message finds it so and ends without sending; an
 * attempt already on the wire is recorded as the transition table says (transitions.ts). An
 * approved message needs its delivery job: the caller adds it.
 */
export async function changeMessageStatus(
  db: MessageReader,
  request: { projectId: string; id: string; action: StatusAction; actor: string; ip: string | null },
): Promise<MessageActionResult> {
  const { projectId, id, action, actor, ip } = request;
  const { from, to, event } = lifecycleActions[action];
  const at = utc(new Date());
  const rows = await db.$queryRaw<{ changed: number; status: MessageStatus | null }[]>`
WITH changed AS (
  UPDATE "Message"
  SET ${statusChange(to, at)}
  WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid
    AND "status"::text IN (${Prisma.raw(sqlList(from))})
  RETURNING "id", "projectId"
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, c."projectId", ${actor}, ${event}, ${ip}, jsonb_build_object('messageId', c."id")
  FROM changed c
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", ${event}, ${at}, '{}'::jsonb FROM changed c
)
SELECT (SELECT count(*)::int FROM changed) AS "changed",
       (SELECT "status" FROM "Message" WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid) AS "status"`;
  const row = rows[0];
  if (row && row.changed > 0) return { ok: true };
  if (!row?.status) return { ok: false, reason: "not_found" };
  const refused = checkAction(action, row.status);
  // The status read was allowed, yet the guard did not match: the row changed meanwhile.
  return refused.ok ? { ok: false, reason: "invalid_transition", from: row.status, to } : refused;
}

export type BulkAction = LifecycleAction;

/**
 * Most messages one bulk action looks at: the newest this many that match its filter. One
 * statement, so one transaction holding at most this many row locks, and a bounded reply time.
 * `matched` equal to it says more may match: run the action again (messages it changed no longer
 * match a filter on the status they left).
 */
export const bulkActionLimit = 10_000;

export interface BulkActionRequest {
  projectId: string;
  action: BulkAction;
  filter: Omit<MessageFilter, "subject">;
  dryRun: boolean;
  actor: string;
  ip: string | null;
}

export interface BulkActionResult {
  /** Messages the filter matched (at most `bulkActionLimit`). */
  matched: number;
  /** Those whose status allowed the action (dry run: would allow it). */
  changed: number;
  /** The ids of the changed messages (empty on a dry run): a retry or an approve enqueues them. */
  changedIds: string[];
}

/**
 * Retries, cancels, approves or denies every message of a project that `filter` matches (the newest
 * `bulkActionLimit`), each as the single action would: the transition table's guard, and for each
 * changed message its event (`message.retried`, `.cancelled`, `.approved`, `.denied`) in the same
 * statement. ONE
 * audit event (`message.bulk_action`) for the whole action, with its filter and counts, rather
 * than one per message. A dry run reads the same matched set and counts the messages whose status
 * allows the action, writing nothing: its `matched` is the real run's when nothing changed between.
 */
export async function applyBulkAction(
  db: MessageReader,
  request: BulkActionRequest,
): Promise<BulkActionResult> {
  const { projectId, action, filter, dryRun, actor, ip } = request;
  const { from, to, event: eventType } = lifecycleActions[action];
  const allowedFrom = Prisma.raw(sqlList(from));
  const matched = Prisma.sql`
  SELECT m."id", m."status" FROM "Message" m
  WHERE ${messageFilterSql(projectId, filter)}
  ORDER BY m."createdAt" DESC, m."id" DESC
  LIMIT ${Prisma.raw(String(bulkActionLimit))}`;
  if (dryRun) {
    const rows = await db.$queryRaw<{ matched: number; changed: number }[]>`
WITH matched AS (${matched})
SELECT count(*)::int AS "matched", (count(*) FILTER (WHERE "status"::text IN (${allowedFrom})))::int AS "changed"
FROM matched`;
    return { matched: rows[0]?.matched ?? 0, changed: rows[0]?.changed ?? 0, changedIds: [] };
  }
  const at = utc(new Date());
  // A retry makes the recipients the upstream refused pending again, as the single retry does.
  const recipients =
    action === "retry"
      ? Prisma.sql`, recipients AS (
  UPDATE "MessageRecipient" SET "status" = 'pending', "updatedAt" = ${at}
  WHERE "messageId" IN (SELECT "id" FROM changed) AND "status" = 'failed'
)`
      : Prisma.empty;
  const details = JSON.stringify({ action, filter });
  const rows = await db.$queryRaw<{ matched: number; changedIds: string[] }[]>`
WITH matched AS (${matched}
), changed AS (
  UPDATE "Message" AS u SET ${statusChange(to, at)}
  FROM matched
  WHERE u."id" = matched."id" AND u."status"::text IN (${allowedFrom})
  RETURNING u."id", u."projectId"
)${recipients}, event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", ${eventType}, ${at}, jsonb_build_object('bulk', true) FROM changed c
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  VALUES (${at}, ${projectId}::uuid, ${actor}, 'message.bulk_action', ${ip},
          ${details}::jsonb || jsonb_build_object('matched', (SELECT count(*) FROM matched),
                                                  'changed', (SELECT count(*) FROM changed)))
)
SELECT (SELECT count(*)::int FROM matched) AS "matched",
       (SELECT coalesce(array_agg("id"::text), '{}') FROM changed) AS "changedIds"`;
  const changedIds = rows[0]?.changedIds ?? [];
  return { matched: rows[0]?.matched ?? 0, changed: changedIds.length, changedIds };
}
