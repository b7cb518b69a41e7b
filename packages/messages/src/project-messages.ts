import { type Database, type Message, type MessageStatus, Prisma } from "@postern/db";
import { type MessageFilter, messageFilterSql, utc } from "./message-filter";
import { checkAction, lifecycleActions, sqlList, type TransitionResult } from "./transitions";

/** Prisma client or an open transaction. */
export type MessageReader = Pick<Database, "message" | "$queryRaw"> | Prisma.TransactionClient;

export interface MessageListQuery extends MessageFilter {
  projectId: string;
  limit: number;
  /** The last message of the previous page. */
  before?: { createdAt: Date; id: string };
}

/**
 * A project's messages matching the filter, newest first, `limit + 1` of them (the extra one says
 * there is a next page), with their recipients' addresses. The indexes each filter uses:
 * `messageFilterSql`.
 */
export function listMessages(db: MessageReader, query: MessageListQuery): Promise<ListedMessage[]> {
  return db.$queryRaw<ListedMessage[]>(listMessagesSql(query));
}

/** The statement of `listMessages` (its plan is tested on a large table). */
export function listMessagesSql(query: MessageListQuery): Prisma.Sql {
  const { projectId, before, limit, ...filter } = query;
  const after = before
    ? Prisma.sql`AND (m."createdAt", m."id") < (${utc(before.createdAt)}, ${before.id}::uuid)`
    : Prisma.empty;
  return Prisma.sql`
SELECT m.*,
       (SELECT coalesce(json_agg(json_build_object('address', r."address") ORDER BY r."id"), '[]')
        FROM "MessageRecipient" r WHERE r."messageId" = m."id") AS "recipients"
FROM "Message" m
WHERE ${messageFilterSql(projectId, filter)} ${after}
ORDER BY m."createdAt" DESC, m."id" DESC
LIMIT ${Prisma.raw(String(Math.trunc(limit) + 1))}`;
}

/** A project's message with its recipients and attempts; null for another project's. */
export function findMessage(db: MessageReader, projectId: string, id: string) {
  return db.message.findFirst({
    where: { id, projectId },
    include: {
      recipients: { orderBy: { address: "asc" } },
      deliveryAttempts: { orderBy: { number: "asc" } },
    },
  });
}

export type ListedMessage = Message & { recipients: { address: string }[] };

/** Messages of a project still waiting for delivery (queued, deferred) or for approval (held). */
export function countPendingMessages(db: MessageReader, projectId: string): Promise<number> {
  return db.message.count({ where: { projectId, status: { in: ["queued", "deferred", "held"] } } });
}

/**
 * Accept → delivered latency percentiles (p50, p90, p99) over the `sample` latest delivered
 * messages accepted in [from, to).
 */
export async function deliveryLatency(
  db: MessageReader,
  query: { projectId: string; from: Date; to: Date; sample: number },
): Promise<{ p: number[] | null; n: number } | undefined> {
  const { projectId, from, to, sample } = query;
  const rows = await db.$queryRaw<{ p: number[] | null; n: number }[]>`
            SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms) AS p, count(*)::int AS n
            FROM (
              SELECT extract(epoch FROM ("deliveredAt" - "createdAt")) * 1000 AS ms FROM "Message"
              WHERE "projectId" = ${projectId}::uuid AND status = 'delivered'
                AND "createdAt" >= ${from} AND "createdAt" < ${to} AND "deliveredAt" IS NOT NULL
              ORDER BY "createdAt" DESC LIMIT ${Prisma.raw(String(sample))}
            ) latest`;
  return rows[0];
}

/** What a lifecycle action on one message (retry, cancel, approve, deny) did. */
export type MessageActionResult =
  | { ok: true }
  | { ok: false; reason: "not_found" }
  | Exclude<TransitionResult, { ok: true }>;

const retryFrom = sqlList(lifecycleActions.retry.from);

/**
 * Moves a project's message back to `queued` for another attempt now, if the transition table
 * allows it from its status. ONE statement: the guarded update (two concurrent retries, or a
 * retry racing the worker, change the row once), the recipients the upstream refused made
 * pending again (those it accepted are never re-sent), the `message.retried` audit event and
 * the `message.retried` event. The last SELECT reads the statement's snapshot, so it answers the
 * status the message had when nothing changed.
 */
export async function retryMessage(
  db: MessageReader,
  request: { projectId: string; id: string; actor: string; ip: string | null },
): Promise<MessageActionResult> {
  const { projectId, id, actor, ip } = request;
  const at = utc(new Date());
  const rows = await db.$queryRaw<{ changed: number; status: MessageStatus | null }[]>`
WITH changed AS (
  UPDATE "Message"
  SET "status" = 'queued', "nextAttemptAt" = ${at}, "completedAt" = NULL, "updatedAt" = ${at}
  WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid
    AND "status"::text IN (${Prisma.raw(retryFrom)})
  RETURNING "id", "projectId", "status"
), recipients AS (
  UPDATE "MessageRecipient" SET "status" = 'pending', "updatedAt" = ${at}
  WHERE "messageId" IN (SELECT "id" FROM changed) AND "status" = 'failed'
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, c."projectId", ${actor}, 'message.retried', ${ip}, jsonb_build_object('messageId', c."id")
  FROM changed c
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", 'message.retried', ${at}, '{}'::jsonb FROM changed c
)
SELECT (SELECT count(*)::int FROM changed) AS "changed",
       (SELECT "status" FROM "Message" WHERE "id" = ${id}::uuid AND "projectId" = ${projectId}::uuid) AS "status"`;
  const row = rows[0];
  if (row && row.changed > 0) return { ok: true };
  if (!row?.status) return { ok: false, reason: "not_found" };
  const refused = checkAction("retry", row.status);
  // The status read was allowed, yet the guard did not match: the row changed meanwhile.
  return refused.ok ? { ok: false, reason: "invalid_transition", from: row.status, to: "queued" } : refused;
}
