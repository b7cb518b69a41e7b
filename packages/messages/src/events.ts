import { Prisma, pruneInBatches, type SqlPool } from "@postern/db";
import type { MessageReader } from "./project-messages";

/** What a status change is recorded as (the transactional outbox, table "MessageEvent"). */
export const messageEventTypes = [
  "message.accepted",
  "message.delivered",
  "message.deferred",
  "message.failed",
  "message.retried",
  "message.cancelled",
  "message.held",
  "message.approved",
  "message.denied",
  /** Recipients of an HTTP submission left out because the project suppresses them (accept.ts). */
  "message.suppressed",
  /** Delivered recipients a delivery status notification reported failed (the inbound role, reports.ts). */
  "message.bounced",
  /** Delivered recipients a feedback report (ARF) said complained (the inbound role, reports.ts). */
  "message.complained",
] as const;

export type MessageEventType = (typeof messageEventTypes)[number];

export interface MessageEventRow {
  id: bigint;
  txId: bigint;
  messageId: string;
  type: string;
  createdAt: Date;
  data: unknown;
}

/** An event as the API and the CLI show it (GET /v1/events). */
export function messageEventJson(event: MessageEventRow) {
  return {
    id: event.id.toString(),
    messageId: event.messageId,
    type: event.type as MessageEventType,
    createdAt: event.createdAt.toISOString(),
    data: (event.data ?? {}) as Record<string, unknown>,
  };
}

/** Where a reader of `listEvents` stands: the (txId, id) of the last event it read. */
export interface EventCursor {
  txId: bigint;
  id: bigint;
}

export function encodeEventCursor(cursor: EventCursor): string {
  return `${cursor.txId}-${cursor.id}`;
}

/** Undefined when `value` is not a cursor this API gave. */
export function decodeEventCursor(value: string): EventCursor | undefined {
  const match = /^([0-9]{1,19})-([0-9]{1,19})$/.exec(value);
  if (!match?.[1] || !match[2]) return undefined;
  return { txId: BigInt(match[1]), id: BigInt(match[2]) };
}

/**
 * A message's events, oldest first; undefined when the project has no such message.
 */
export async function listMessageEvents(
  db: MessageReader,
  projectId: string,
  messageId: string,
): Promise<MessageEventRow[] | undefined> {
  const rows = await db.$queryRaw<Array<MessageEventRow & { found: boolean }>>`
SELECT e."id", e."txId", m."id" AS "messageId", e."type", e."createdAt", e."data", true AS "found"
FROM "Message" m
LEFT JOIN "MessageEvent" e ON e."messageId" = m."id"
WHERE m."id" = ${messageId}::uuid AND m."projectId" = ${projectId}::uuid
ORDER BY e."id"`;
  if (rows.length === 0) return undefined;
  return rows.filter((row) => row.id !== null);
}

/**
 * A project's events after `after` (from the first when unset), oldest first, at most `limit`.
 *
 * Event ids come from a sequence, and a transaction that took a lower id may commit after one
 * that took a higher: a plain `id > cursor` would skip it for ever. So events are ordered by the
 * writing transaction's id, then their own, and only transactions older than every transaction
 * still running are shown (`pg_snapshot_xmin`): every event that can still commit then sorts
 * after the last one shown. An event shows once every transaction older than its own has ended
 * (milliseconds on a busy relay; as long as a long-running transaction lasts).
 */
export function listEvents(
  db: MessageReader,
  query: { projectId: string; after?: EventCursor; type?: string; limit: number },
): Promise<MessageEventRow[]> {
  const after = query.after ?? { txId: -1n, id: -1n };
  const type = query.type ?? null;
  return db.$queryRaw<MessageEventRow[]>`
SELECT "id", "txId", "messageId", "type", "createdAt", "data"
FROM "MessageEvent"
WHERE "projectId" = ${query.projectId}::uuid
  AND ("txId", "id") > (${after.txId}::bigint, ${after.id}::bigint)
  AND "txId" < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  AND (${type}::text IS NULL OR "type" = ${type}::text)
ORDER BY "txId", "id"
LIMIT ${Prisma.raw(String(Math.trunc(query.limit)))}`;
}

/** An event of the outbox as its readers outside the API take it (the webhook dispatcher). */
export interface OutboxEvent extends MessageEventRow {
  projectId: string;
}

/** Where a reader of the outbox stands in one project's events. */
export interface ProjectEventCursor {
  projectId: string;
  after: EventCursor;
}

/**
 * The events of each project after its cursor, oldest first, at most `limitPerProject` of each,
 * by the rule of `listEvents` (only transactions older than every running one), in one statement:
 * the webhook dispatcher's read of the outbox (packages/webhooks). Run inside the caller's
 * transaction, so that the cursors it moves past them and what it writes commit together.
 */
export async function listEventsAfterCursors(
  sql: Pick<SqlPool, "query">,
  cursors: ProjectEventCursor[],
  limitPerProject: number,
): Promise<OutboxEvent[]> {
  if (cursors.length === 0) return [];
  const { rows } = await sql.query<Omit<OutboxEvent, "createdAt"> & { createdAtMs: number }>({
    name: "postern-outbox-after-cursors",
    text: `
SELECT e."id", e."txId", e."projectId", e."messageId", e."type",
  extract(epoch FROM e."createdAt")::float8 * 1000 AS "createdAtMs", e."data"
FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS c(project_id, tx_id, event_id)
CROSS JOIN LATERAL (
  SELECT "id", "txId", "projectId", "messageId", "type", "createdAt", "data" FROM "MessageEvent"
  WHERE "projectId" = c.project_id
    AND ("txId", "id") > (c.tx_id, c.event_id)
    AND "txId" < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  ORDER BY "txId", "id"
  LIMIT $4::int
) e
ORDER BY e."txId", e."id"`,
    values: [
      cursors.map((c) => c.projectId),
      cursors.map((c) => c.after.txId.toString()),
      cursors.map((c) => c.after.id.toString()),
      limitPerProject,
    ],
  });
  // node-postgres gives bigint columns as strings; the column holds UTC without a zone.
  return rows.map(({ createdAtMs, ...row }) => ({
    ...row,
    id: BigInt(row.id),
    txId: BigInt(row.txId),
    createdAt: new Date(Math.round(createdAtMs)),
  }));
}

/**
 * The oldest `$2` events by id, of which those created before the cutoff are deleted: as the audit
 * retention does (packages/audit/src/retention.ts), each statement reads at most `$2` rows of the
 * primary key and needs no index on `createdAt`; ids come from a sequence, and the `createdAt`
 * test keeps a late-committed newer event among older ids.
 */
const pruneBatch = {
  name: "postern-message-event-prune",
  text: `
DELETE FROM "MessageEvent"
WHERE "id" = ANY (ARRAY(SELECT "id" FROM "MessageEvent" ORDER BY "id" LIMIT $2::int))
  AND "createdAt" < $1::timestamp(3)`,
};

/**
 * EVENT_RETENTION_DAYS: deletes message events created before `olderThan`, whatever their
 * message's status, oldest first, in statements of at most `batchSize` rows (`pruneInBatches`).
 * The messages stay. Returns how many were deleted.
 */
export function pruneMessageEvents(
  sql: Pick<SqlPool, "query">,
  olderThan: Date,
  batchSize?: number,
): Promise<number> {
  return pruneInBatches(sql, pruneBatch, olderThan, batchSize);
}
