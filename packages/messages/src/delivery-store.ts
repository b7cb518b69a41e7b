import { forEachRow, type MessageStatus, type RecipientStatus, type SqlPool } from "@postern/db";
import { createGroupCommit } from "./group-commit";
import { sqlTransitionPairs } from "./transitions";

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
  /** The project's routes version (0: none): the worker's route cache is keyed by it. */
  routesVersion: number;
  /** The project adds recipients the upstream answered 5.1.x for to its suppressions (the record does). */
  autoSuppress: boolean;
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

/** Everything one attempt writes, in one statement (shared with the attempts recorded beside it). */
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
  /**
   * The `data` of the message's event (`message.<status>`), written by the same statement:
   * `{ attempt, recipients: [{ address, status, code, enhancedCode, response }] }`.
   */
  event: unknown;
}

export interface DeliveryStore {
  load(messageId: string): Promise<StoredMessage | undefined>;
  /** False when another run of the same message recorded its attempt first: nothing was written. */
  record(record: AttemptRecord): Promise<boolean>;
}

export interface DeliveryStoreOptions {
  /** Most messages loaded, or recorded, by one statement. */
  maxBatchMessages?: number;
  /**
   * Least time from the start of one load (or record) statement to the start of the next, unless
   * a full batch waits; 5 ms when unset.
   */
  statementSpacingMs?: number;
}

/**
 * 5 ms between statements: in the benchmark, spacing of 2 to 10 ms moved more of `pooled-10k`'s
 * messages than none, and 5 ms spent less CPU per message across Postern, PostgreSQL and Redis
 * (docs/benchmarks-history.md, Thirteenth round).
 */
const defaultStatementSpacingMs = 5;

/**
 * The delivery hot path's two statements, in raw SQL over the process's `pg` pool (the one under
 * its Prisma client, `sqlPoolOf`) rather than through Prisma: one query loads messages with their
 * project, body and recipients, one statement records attempts. With Prisma they were ~4 queries
 * and a 6-round-trip interactive transaction per delivery, and its client runtime was a quarter
 * of the process's CPU (docs/benchmarks-history.md, What the first measurements and the profile
 * showed). Both are named (prepared once per connection). The columns written are exactly those
 * Prisma wrote, including `updatedAt` (Prisma's `@updatedAt` is filled by the client, not the
 * database).
 *
 * Group commit (`createGroupCommit`, group-commit.ts, as on the accept path): the worker runs up to
 * DELIVERY_CONCURRENCY deliveries at once, and the loads (or records) they ask for while one is
 * being run, or in the same tick, go out together as one statement, so one round trip, one
 * commit and one run of the statement-level stats triggers on "Message" serve a batch. A
 * statement starts at most every `statementSpacingMs`, as PostgreSQL's `commit_delay` holds a
 * commit for others to join it: without that, a statement that returns in a millisecond or two
 * is followed at once by one for the one or two deliveries that came meanwhile, and each pays a
 * round trip, a WAL flush and the triggers for little. A delivery waits at most that long for its
 * load and its record; alone, after a quiet spell, it does not wait. Each caller still gets its
 * own message, or its own `claimed`. One statement at a time (the accept path keeps two in
 * flight; here one gave twice the messages per statement in the benchmark, and a delivery does
 * not wait on its statements with a client on the line). A failed batch fails each of its
 * callers (BullMQ retries their jobs), except when PostgreSQL refused one of its rows (see
 * `refusedARow`): then each is run alone, so one poisoned record cannot fail its neighbours.
 *
 * Timestamps cross the wire as ISO strings cast to `timestamp(3)`: the columns are
 * `timestamp without time zone` holding UTC, as Prisma writes them, and PostgreSQL ignores the
 * zone of the literal, so the session's TimeZone cannot shift them.
 */
export function createDeliveryStore(
  sql: Pick<SqlPool, "query" | "connect">,
  options: DeliveryStoreOptions = {},
): DeliveryStore {
  const batching = {
    maxItems: options.maxBatchMessages ?? 64,
    spacingMs: options.statementSpacingMs ?? defaultStatementSpacingMs,
  };
  const load = createGroupCommit(
    async (messageIds: string[]): Promise<Array<StoredMessage | undefined>> => {
      // A row per slice of a body (see loadSql); the first slice's row carries the recipients.
      // Each slice is decoded into its place in its body as it is read, and its text dropped: the
      // bodies of a batch are never all held as text, and each is one buffer of its exact size.
      const loaded = new Map<string, { row: LoadedRow; body: Buffer | null; decoded: number }>();
      await forEachRow<LoadedRow>(
        sql,
        { name: "postern-delivery-load", text: loadSql, values: [messageIds] },
        (row) => {
          let message = loaded.get(row.id);
          if (!message) {
            const body = row.bodyBytes === null ? null : Buffer.allocUnsafe(row.bodyBytes);
            message = { row, body, decoded: 0 };
            loaded.set(row.id, message);
          }
          if (message.body && row.body !== null)
            message.decoded += message.body.write(row.body, row.part * bodySliceBytes, "base64");
          row.body = null;
          if (row.part === 0) message.row = row;
        },
      );
      return messageIds.map((id) => {
        const message = loaded.get(id);
        if (!message) return undefined;
        const { row, body, decoded } = message;
        if (body && decoded !== body.length)
          throw new Error(`message ${id}: decoded ${decoded} of its body's ${body.length} bytes`);
        return {
          id: row.id,
          projectId: row.projectId,
          mailFrom: row.mailFrom,
          status: row.status,
          attempts: row.attempts,
          createdAt: new Date(row.createdAtMs),
          upstreamUrl: row.upstreamUrl,
          upstreamSecret: row.upstreamSecret,
          routesVersion: row.routesVersion,
          autoSuppress: row.autoSuppress,
          body,
          recipients: row.recipients ?? [],
        };
      });
    },
    { ...batching, keyOf: (messageId) => messageId },
  );
  const record = createGroupCommit(
    async (records: AttemptRecord[]): Promise<boolean[]> => {
      const result = await sql.query<{ id: string }>({
        name: "postern-delivery-record",
        text: recordSql,
        values: recordParameters(records),
      });
      const claimed = new Set(result.rows.map((row) => row.id));
      return records.map((r) => claimed.has(r.messageId));
    },
    { ...batching, keyOf: (record) => record.messageId },
  );
  return { load: load.submit, record: record.submit };
}

interface LoadedRow extends Omit<StoredMessage, "createdAt" | "body" | "recipients"> {
  createdAtMs: number;
  /** Which slice of the body this row holds, from 0. */
  part: number;
  /** A slice of the body, in base64 (see loadSql); null when the message has no body. */
  body: string | null;
  /** The whole body's size; null when the message has no body. */
  bodyBytes: number | null;
  /** On the row of slice 0 only. */
  recipients: StoredMessage["recipients"] | null;
}

/**
 * Bytes of a body per row of the load. `pg` turns each column into a string; a body's string in
 * one piece is a large object to V8 (over 128 KiB), which only a full collection frees, and with
 * 1 MiB messages those strings made the worker's heap swing widely between collections
 * (docs/benchmarks-history.md, Fourth and Sixth rounds). A slice's base64 text, 65,536 characters
 * and PostgreSQL's line breaks, is an ordinary young object that the next scavenge frees once it is
 * decoded.
 */
export const bodySliceBytes = 49_152;

/**
 * `extract(epoch …)` of a timestamp without time zone reads it as UTC, which it holds. The body
 * comes as base64 text rather than bytea: `pg` reads every column as text, and bytea's text form
 * is hex, twice the body's size to send, hold as a string and decode; base64 is 1.37 times
 * (PostgreSQL breaks its lines, which Node's decoder skips). It comes in slices of
 * `bodySliceBytes`, a row each (one row for an empty body or none); `substring` reads only its
 * slice of the stored body (stored uncompressed, EXTERNAL, for that), and the recipients are
 * built for the first row only.
 *
 * Every table is reached through its primary key, per message, whatever the statistics say:
 * the body and the recipients by correlated subqueries, the project by a LATERAL subquery that
 * LIMIT keeps from being flattened into a join. As a plain join, a planner working from stale
 * statistics (a table that grew from empty since its last ANALYZE, as under a burst) chose a
 * sequential scan of "MessageBody" (every body retained) for each load.
 */
export const loadSql = `
SELECT m."id", m."projectId", m."mailFrom", m."status", m."attempts",
       (extract(epoch FROM m."createdAt") * 1000)::float8 AS "createdAtMs",
       p."upstreamUrl", p."upstreamSecret", p."routesVersion", p."autoSuppress",
       octet_length(b."data") AS "bodyBytes",
       s."part", encode(substring(b."data" FROM s."part" * ${bodySliceBytes} + 1 FOR ${bodySliceBytes}), 'base64') AS "body",
       CASE WHEN s."part" = 0 THEN
         (SELECT coalesce(json_agg(json_build_object(
                  'id', r."id", 'address', r."address", 'status', r."status", 'code', r."code",
                  'enhancedCode', r."enhancedCode", 'response', r."response") ORDER BY r."id"), '[]')
          FROM "MessageRecipient" r WHERE r."messageId" = m."id")
       END AS "recipients"
FROM "Message" m
CROSS JOIN LATERAL (
  SELECT p."upstreamUrl", p."upstreamSecret", p."routesVersion", p."autoSuppress" FROM "Project" p WHERE p."id" = m."projectId" LIMIT 1
) p
LEFT JOIN LATERAL (
  SELECT b."data" FROM "MessageBody" b WHERE b."messageId" = m."id" LIMIT 1
) b ON true
CROSS JOIN LATERAL generate_series(0, greatest((octet_length(b."data") - 1) / ${bodySliceBytes}, 0)) AS s("part")
WHERE m."id" = ANY($1::uuid[])`;

/**
 * One array per column, one element per record (recipients: one per recipient, with its
 * message's id), so the statement's text is the same for any batch. Records are sorted by
 * message id: two batches that share messages (two runs of one message in two workers)
 * then lock their "Message" rows in the same order rather than deadlock.
 */
function recordParameters(records: AttemptRecord[]): unknown[] {
  const sorted = [...records].sort((a, b) => (a.messageId < b.messageId ? -1 : 1));
  const recipients = sorted.flatMap((r) =>
    r.recipients.map((recipient) => ({ ...recipient, messageId: r.messageId })),
  );
  return [
    sorted.map((r) => r.messageId),
    sorted.map((r) => r.loadedAttempts),
    sorted.map((r) => r.status),
    sorted.map((r) => r.attempt.number),
    sorted.map((r) => r.nextAttemptAt?.toISOString() ?? null),
    sorted.map((r) => r.lastError),
    sorted.map((r) => r.now.toISOString()),
    sorted.map((r) => r.attempt.id),
    sorted.map((r) => r.attempt.startedAt.toISOString()),
    sorted.map((r) => r.attempt.durationMs),
    sorted.map((r) => r.attempt.upstreamHost),
    sorted.map((r) => r.attempt.code),
    sorted.map((r) => r.attempt.enhancedCode),
    sorted.map((r) => r.attempt.response),
    sorted.map((r) => JSON.stringify(r.attempt.recipients)),
    sorted.map((r) => r.audit?.action ?? null),
    sorted.map((r) => (r.audit ? JSON.stringify(r.audit.details) : null)),
    recipients.map((r) => r.messageId),
    recipients.map((r) => r.id),
    recipients.map((r) => r.status),
    recipients.map((r) => r.code),
    recipients.map((r) => r.enhancedCode),
    recipients.map((r) => r.response),
    sorted.map((r) => JSON.stringify(r.event)),
  ];
}

/**
 * The guarded UPDATE of "Message" claims each attempt: if a second run of the same message (a
 * stalled job picked up again while the first still ran) recorded first, the attempt count or
 * the status no longer match, that message is not in `claimed` and every other part writes
 * nothing for it; the other messages of the batch are written. `claimed` returns the row as
 * written, so its `updatedAt` is the record's `now` for the recipients and the audit event.
 * The statement-level stats triggers on "Message" see one UPDATE per batch. The guard's (status,
 * outcome) pairs are those the transition table (transitions.ts) allows: a message cancelled
 * while its attempt was on the wire takes the attempt's outcome if delivered or failed, and
 * nothing is written if it deferred (it stays cancelled); each
 * claimed message gets its `message.<status>` event from the same statement, so the status and
 * its event are committed together or not at all.
 *
 * Auto-suppression (docs/suppressions.md): a recipient this attempt failed with an enhanced code
 * 5.1.x (the address does not exist) is added to its project's suppressions, reason
 * `hard_bounce`, its message as the source, when the project's `autoSuppress` is on; that
 * recipient alone, by the same statement as its failure. An entry already in effect is left as
 * it is (its reason and source stand); an expired one is renewed. The project's
 * `suppressionsVersion` is bumped when an entry was written, so RCPT's cache reads it again.
 *
 * Rows are found by primary key (`= ANY` of the batch's ids) whatever the statistics say. The
 * status guard is compared as text so that it cannot be answered from the status index: with
 * statistics taken while few messages were queued, the planner read every queued message through
 * that index and joined them with the batch, so each record cost as much as the backlog was long.
 */
export const recordSql = `
WITH input AS (
  SELECT *
  FROM unnest($1::uuid[], $2::int[], $3::"MessageStatus"[], $4::int[], $5::timestamp(3)[], $6::text[],
              $7::timestamp(3)[], $8::uuid[], $9::timestamp(3)[], $10::int[], $11::text[], $12::int[],
              $13::text[], $14::text[], $15::jsonb[], $16::text[], $17::jsonb[], $24::jsonb[])
       WITH ORDINALITY
       AS t("messageId", "loadedAttempts", "status", "number", "nextAttemptAt", "lastError", "now",
            "attemptId", "startedAt", "durationMs", "upstreamHost", "code", "enhancedCode", "response",
            "recipients", "auditAction", "auditDetails", "eventData", "n")
), claimed AS (
  UPDATE "Message" AS m
  SET "status" = i."status",
      "attempts" = i."number",
      "nextAttemptAt" = i."nextAttemptAt",
      "lastError" = i."lastError",
      "deliveredAt" = CASE WHEN i."status" = 'delivered' THEN i."now" ELSE m."deliveredAt" END,
      "completedAt" = CASE WHEN i."status" IN ('delivered', 'failed') THEN i."now" ELSE m."completedAt" END,
      "updatedAt" = i."now"
  FROM input i
  WHERE m."id" = ANY($1::uuid[]) AND m."id" = i."messageId" AND m."attempts" = i."loadedAttempts"
    AND (m."status"::text, i."status"::text) IN (${sqlTransitionPairs("delivered", "deferred", "failed")})
  RETURNING m."id", m."projectId", m."updatedAt"
), attempt AS (
  INSERT INTO "DeliveryAttempt"
    ("id", "messageId", "number", "startedAt", "durationMs", "upstreamHost", "outcome", "code",
     "enhancedCode", "response", "recipients")
  SELECT i."attemptId", c."id", i."number", i."startedAt", i."durationMs", i."upstreamHost", i."status",
         i."code", i."enhancedCode", i."response", i."recipients"
  FROM input i JOIN claimed c ON c."id" = i."messageId"
), recipients AS (
  UPDATE "MessageRecipient" AS r
  SET "status" = u."status"::"RecipientStatus", "code" = u."code", "enhancedCode" = u."enhancedCode",
      "response" = u."response", "updatedAt" = c."updatedAt"
  FROM unnest($18::uuid[], $19::uuid[], $20::text[], $21::int[], $22::text[], $23::text[])
       AS u("messageId", "id", "status", "code", "enhancedCode", "response")
  JOIN claimed c ON c."id" = u."messageId"
  WHERE r."id" = ANY($19::uuid[]) AND r."id" = u."id" AND r."messageId" = c."id"
  RETURNING r."address", r."messageId", c."projectId", r."status", r."enhancedCode", r."updatedAt"
), suppressed AS (
  INSERT INTO "Suppression" AS s ("projectId", "address", "reason", "sourceMessageId", "createdAt", "updatedAt")
  SELECT DISTINCT ON (f."projectId", lower(f."address"))
         f."projectId", lower(f."address"), 'hard_bounce'::"SuppressionReason", f."messageId", f."updatedAt", f."updatedAt"
  FROM recipients f JOIN "Project" p ON p."id" = f."projectId"
  WHERE p."autoSuppress" AND f."status" = 'failed' AND f."enhancedCode" LIKE '5.1.%'
  ORDER BY f."projectId", lower(f."address"), f."messageId"
  ON CONFLICT ("projectId", "address") DO UPDATE
    SET "reason" = EXCLUDED."reason", "sourceMessageId" = EXCLUDED."sourceMessageId", "expiresAt" = NULL,
        "createdAt" = EXCLUDED."createdAt", "updatedAt" = EXCLUDED."updatedAt"
    WHERE s."expiresAt" IS NOT NULL AND s."expiresAt" <= EXCLUDED."updatedAt"
  RETURNING s."projectId"
), suppressions_version AS (
  UPDATE "Project" SET "suppressionsVersion" = "suppressionsVersion" + 1
  WHERE "id" IN (SELECT "projectId" FROM suppressed)
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "details")
  SELECT c."updatedAt", c."projectId", 'system', i."auditAction", i."auditDetails"
  FROM input i JOIN claimed c ON c."id" = i."messageId"
  WHERE i."auditAction" IS NOT NULL
  ORDER BY i."n"
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT c."projectId", c."id", 'message.' || i."status", c."updatedAt", i."eventData"
  FROM input i JOIN claimed c ON c."id" = i."messageId"
  ORDER BY i."n"
)
SELECT "id" FROM claimed`;
