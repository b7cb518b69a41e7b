import type { MessageStatus, RecipientStatus, SqlPool } from "@postern/db";

/** A message as the delivery of one attempt needs it: envelope, body, recipients, upstream. */
export interface StoredMessage {
  id: string;
  projectId: string;
  mailFrom: string;
  status: MessageStatus;
  attempts: number;
  createdAt: Date;
  upstreamUrl: string;
  upstreamSecret: string | null;
  /** Null only if the row was damaged by hand: retention never prunes pending messages. */
  body: Buffer | null;
  recipients: StoredRecipient[];
}

export interface StoredRecipient {
  id: string;
  address: string;
  status: RecipientStatus;
  code: number | null;
  enhancedCode: string | null;
  response: string | null;
}

/** Everything one attempt writes, in one statement. */
export interface AttemptRecord {
  messageId: string;
  /** The attempt count the message had when it was loaded: the guard against a second run. */
  loadedAttempts: number;
  status: MessageStatus;
  nextAttemptAt: Date | null;
  lastError: string | null;
  /** `updatedAt` of every row written, `deliveredAt`/`completedAt` when they apply. */
  now: Date;
  attempt: {
    id: string;
    number: number;
    startedAt: Date;
    durationMs: number;
    upstreamHost: string;
    code: number | null;
    enhancedCode: string | null;
    response: string | null;
    recipients: unknown;
  };
  recipients: Array<Omit<StoredRecipient, "address">>;
  /** The message's final audit event, when the attempt made it final. */
  audit: { action: "message.delivered" | "message.failed"; details: unknown } | null;
}

export interface DeliveryStore {
  load(messageId: string): Promise<StoredMessage | undefined>;
  /** False when another run of the same message recorded its attempt first: nothing was written. */
  record(record: AttemptRecord): Promise<boolean>;
}

/**
 * The delivery hot path's two statements, in raw SQL over the process's `pg` pool (the one under
 * its Prisma client, `sqlPoolOf`) rather than through Prisma:
 * one query loads a message with its project, body and recipients, one statement records an
 * attempt. With Prisma they were ~4 queries and a 6-round-trip interactive transaction per
 * delivery, and its client runtime was a quarter of the process's CPU (docs/benchmarks.md).
 * Both are named (prepared once per connection). The columns written are exactly those Prisma
 * wrote, including `updatedAt` (Prisma's `@updatedAt` is filled by the client, not the database).
 *
 * Timestamps cross the wire as ISO strings cast to `timestamp(3)`: the columns are
 * `timestamp without time zone` holding UTC, as Prisma writes them, and PostgreSQL ignores the
 * zone of the literal, so the session's TimeZone cannot shift them.
 */
export function createDeliveryStore(sql: Pick<SqlPool, "query">): DeliveryStore {
  return {
    async load(messageId) {
      const result = await sql.query<LoadedRow>({
        name: "postern-delivery-load",
        text: loadSql,
        values: [messageId],
      });
      const row = result.rows[0];
      if (!row) return undefined;
      return {
        id: row.id,
        projectId: row.projectId,
        mailFrom: row.mailFrom,
        status: row.status,
        attempts: row.attempts,
        createdAt: new Date(row.createdAtMs),
        upstreamUrl: row.upstreamUrl,
        upstreamSecret: row.upstreamSecret,
        body: row.body,
        recipients: row.recipients,
      };
    },
    async record(record) {
      const { attempt, recipients } = record;
      const result = await sql.query<{ claimed: number }>({
        name: "postern-delivery-record",
        text: recordSql,
        values: [
          record.messageId,
          record.loadedAttempts,
          record.status,
          attempt.number,
          record.nextAttemptAt?.toISOString() ?? null,
          record.lastError,
          record.now.toISOString(),
          attempt.id,
          attempt.startedAt.toISOString(),
          attempt.durationMs,
          attempt.upstreamHost,
          attempt.code,
          attempt.enhancedCode,
          attempt.response,
          JSON.stringify(attempt.recipients),
          recipients.map((r) => r.id),
          recipients.map((r) => r.status),
          recipients.map((r) => r.code),
          recipients.map((r) => r.enhancedCode),
          recipients.map((r) => r.response),
          record.audit?.action ?? null,
          record.audit ? JSON.stringify(record.audit.details) : null,
        ],
      });
      return (result.rows[0]?.claimed ?? 0) > 0;
    },
  };
}

interface LoadedRow extends Omit<StoredMessage, "createdAt"> {
  createdAtMs: number;
}

/** `extract(epoch …)` of a timestamp without time zone reads it as UTC, which it holds. */
const loadSql = `
SELECT m."id", m."projectId", m."mailFrom", m."status", m."attempts",
       (extract(epoch FROM m."createdAt") * 1000)::float8 AS "createdAtMs",
       p."upstreamUrl", p."upstreamSecret", b."data" AS "body",
       (SELECT coalesce(json_agg(json_build_object(
                'id', r."id", 'address', r."address", 'status', r."status", 'code', r."code",
                'enhancedCode', r."enhancedCode", 'response', r."response") ORDER BY r."id"), '[]')
        FROM "MessageRecipient" r WHERE r."messageId" = m."id") AS "recipients"
FROM "Message" m
JOIN "Project" p ON p."id" = m."projectId"
LEFT JOIN "MessageBody" b ON b."messageId" = m."id"
WHERE m."id" = $1::uuid`;

/**
 * The guarded UPDATE of "Message" claims the attempt: if a second run of the same message (a
 * stalled job picked up again while the first still ran) recorded first, the attempt count or
 * the status no longer match, `claimed` is empty and every other part writes nothing. The
 * statement-level stats triggers on "Message" see the UPDATE as before.
 */
const recordSql = `
WITH claimed AS (
  UPDATE "Message"
  SET "status" = $3::"MessageStatus",
      "attempts" = $4::int,
      "nextAttemptAt" = $5::timestamp(3),
      "lastError" = $6::text,
      "deliveredAt" = CASE WHEN $3::"MessageStatus" = 'delivered' THEN $7::timestamp(3) ELSE "deliveredAt" END,
      "completedAt" = CASE WHEN $3::"MessageStatus" IN ('delivered', 'failed') THEN $7::timestamp(3) ELSE "completedAt" END,
      "updatedAt" = $7::timestamp(3)
  WHERE "id" = $1::uuid AND "attempts" = $2::int AND "status" IN ('queued', 'deferred')
  RETURNING "id", "projectId"
), attempt AS (
  INSERT INTO "DeliveryAttempt"
    ("id", "messageId", "number", "startedAt", "durationMs", "upstreamHost", "outcome", "code",
     "enhancedCode", "response", "recipients")
  SELECT $8::uuid, "id", $4::int, $9::timestamp(3), $10::int, $11::text, $3::"MessageStatus", $12::int,
         $13::text, $14::text, $15::jsonb
  FROM claimed
), recipients AS (
  UPDATE "MessageRecipient" AS r
  SET "status" = u."status"::"RecipientStatus", "code" = u."code", "enhancedCode" = u."enhancedCode",
      "response" = u."response", "updatedAt" = $7::timestamp(3)
  FROM unnest($16::uuid[], $17::text[], $18::int[], $19::text[], $20::text[])
       AS u("id", "status", "code", "enhancedCode", "response")
  WHERE r."id" = u."id" AND r."messageId" IN (SELECT "id" FROM claimed)
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "details")
  SELECT $7::timestamp(3), "projectId", 'system', $21::text, $22::jsonb
  FROM claimed
  WHERE $21::text IS NOT NULL
)
SELECT count(*)::int AS "claimed" FROM claimed`;
