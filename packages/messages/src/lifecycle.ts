import { type MessageStatus, Prisma } from "@postern/db";
import { type MessageFilter, messageFilterSql, utc } from "./message-filter";
import type { MessageActionResult, MessageReader } from "./project-messages";
import { checkTransition, sqlList, statusesBefore } from "./transitions";

const cancelFrom = sqlList(statusesBefore("cancelled"));

/**
 * Cancels a project's message if the transition table allows it from its status (queued,
 * deferred). ONE statement: the guarded update (no further attempt: `nextAttemptAt` cleared), the
 * `message.cancelled` audit event and the `message.cancelled` event, as `retryMessage` does. A
 * delivery job already queued for it finds it cancelled and ends without sending; an attempt
 * already on the wire is recorded as the transition table says (transitions.ts).
 */
export async function cancelMessage(
  db: MessageReader,
  request: { projectId: string; id: string; actor: string; ip: string | null },
): Promise<MessageActionResult> {
  const { projectId, id, actor, ip } = request;
  const at = utc(new Date());
  const rows = await db.$queryRaw<{ changed: number; status: MessageStatus | null }[]>`
WITH changed AS (
  UPDATE "Message"
  SET "status" = 'cancelled', "nextAttemptAt" = NULL, "completedAt" = ${at}, "updatedAt" = ${at}
  WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid
    AND "status"::text IN (${Prisma.raw(cancelFrom)})
  RETURNING "id", "projectId"
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, c."projectId", ${actor}, 'message.cancelled', ${ip}, jsonb_build_object('messageId', c."id")
  FROM changed c
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", 'message.cancelled', ${at}, '{}'::jsonb FROM changed c
)
SELECT (SELECT count(*)::int FROM changed) AS "changed",
       (SELECT "status" FROM "Message" WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid) AS "status"`;
  const row = rows[0];
  if (row && row.changed > 0) return { ok: true };
  if (!row?.status) return { ok: false, reason: "not_found" };
  const refused = checkTransition(row.status, "cancelled");
  // The status read was allowed, yet the guard did not match: the row changed meanwhile.
  return refused.ok
    ? { ok: false, reason: "invalid_transition", from: row.status, to: "cancelled" }
    : refused;
}

export type BulkAction = "retry" | "cancel";

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
  /** The ids of the changed messages (empty on a dry run): a retry enqueues them. */
  changedIds: string[];
}

const targetOf: Record<BulkAction, MessageStatus> = { retry: "queued", cancel: "cancelled" };

/**
 * Retries or cancels every message of a project that `filter` matches (the newest
 * `bulkActionLimit`), each as the single action would: the transition table's guard, and for each
 * changed message its `message.retried` / `message.cancelled` event in the same statement. ONE
 * audit event (`message.bulk_action`) for the whole action, with its filter and counts, rather
 * than one per message. A dry run reads the same matched set and counts the messages whose status
 * allows the action, writing nothing: its `matched` is the real run's when nothing changed between.
 */
export async function applyBulkAction(
  db: MessageReader,
  request: BulkActionRequest,
): Promise<BulkActionResult> {
  const { projectId, action, filter, dryRun, actor, ip } = request;
  const target = targetOf[action];
  const allowedFrom = Prisma.raw(sqlList(statusesBefore(target)));
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
  const set =
    action === "retry"
      ? Prisma.sql`"status" = 'queued', "nextAttemptAt" = ${at}, "completedAt" = NULL, "updatedAt" = ${at}`
      : Prisma.sql`"status" = 'cancelled', "nextAttemptAt" = NULL, "completedAt" = ${at}, "updatedAt" = ${at}`;
  // A retry makes the recipients the upstream refused pending again, as the single retry does.
  const recipients =
    action === "retry"
      ? Prisma.sql`, recipients AS (
  UPDATE "MessageRecipient" SET "status" = 'pending', "updatedAt" = ${at}
  WHERE "messageId" IN (SELECT "id" FROM changed) AND "status" = 'failed'
)`
      : Prisma.empty;
  const eventType = action === "retry" ? "message.retried" : "message.cancelled";
  const details = JSON.stringify({ action, filter });
  const rows = await db.$queryRaw<{ matched: number; changedIds: string[] }[]>`
WITH matched AS (${matched}
), changed AS (
  UPDATE "Message" AS u SET ${set}
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
