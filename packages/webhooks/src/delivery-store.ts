import { pruneInBatches, type SqlPool, uuidv7 } from "@postern/db";
import { listEventsAfterCursors, type OutboxEvent } from "@postern/messages";
import { type WebhookEvent, webhookEventOf } from "./events";

/*
 * The webhook worker's statements, raw SQL over the process's pool as the delivery worker's
 * (no Prisma in the worker role: packages/messages sweep.ts says why). Timestamps cross as ISO
 * strings read `AT TIME ZONE 'UTC'` and come back as epoch milliseconds: the columns hold UTC
 * without a zone.
 */

type Sql = Pick<SqlPool, "query">;

/**
 * The webhook worker's transactions commit without waiting for the WAL flush (`synchronous_commit
 * = off`, for that transaction only): a crash may lose their last fraction of a second, and a
 * transaction is then lost whole, so its work is redone: a lost dispatch round leaves its cursor
 * where it was (the events are read again), a lost record leaves its delivery due (it is sent
 * again, at least once). Not waiting keeps these commits out of the way of the message store's,
 * which do wait (an accepted message is durable before its 250).
 */
const asyncCommit = "SET LOCAL synchronous_commit = off";
/** `asyncCommit` within a single statement (its own transaction): the setting ends with it. */
const asyncCommitColumn = "set_config('synchronous_commit', 'off', true)";

const utc = (param: string) => `(${param}::timestamptz AT TIME ZONE 'UTC')`;

export interface DispatchResult {
  /** Events read past the projects' cursors. */
  events: number;
  /** Deliveries created, by endpoint. */
  deliveries: Map<string, number>;
  /** A project had more events than one round reads: dispatch again at once. */
  more: boolean;
}

/**
 * One round of the dispatcher: in one transaction, takes the cursors of up to `maxProjects`
 * projects that no other dispatcher holds (least recently moved first), reads their events after
 * them (the outbox, by (txId, id), packages/messages `listEventsAfterCursors`), creates a delivery
 * per event and active endpoint of its project subscribed to its type (and created before it),
 * and moves the cursors past the events read. The deliveries and the cursors commit together: a
 * crash before the commit leaves both as they were, and the events are read again (at least once);
 * one committed has moved the cursor, and no other round held it meanwhile (the row lock), so an
 * (endpoint, event) gets one delivery.
 */
export async function dispatchRound(
  pool: Pick<SqlPool, "connect">,
  options: { maxProjects: number; eventsPerProject: number; now?: Date },
): Promise<DispatchResult> {
  const now = (options.now ?? new Date()).toISOString();
  const client = await pool.connect();
  const result: DispatchResult = { events: 0, deliveries: new Map(), more: false };
  try {
    await client.query("BEGIN");
    // The round's writes are redone if a crash loses them (see `asyncCommit`).
    await client.query(asyncCommit);
    const cursors = await client.query<{ projectId: string; txId: string; eventId: string }>({
      name: "postern-webhook-cursors",
      text: `SELECT "projectId", "txId"::text, "eventId"::text FROM "WebhookCursor"
ORDER BY "updatedAt" LIMIT $1::int FOR UPDATE SKIP LOCKED`,
      values: [options.maxProjects],
    });
    const events =
      cursors.rows.length === 0
        ? []
        : await listEventsAfterCursors(
            client,
            cursors.rows.map((c) => ({
              projectId: c.projectId,
              after: { txId: BigInt(c.txId), id: BigInt(c.eventId) },
            })),
            options.eventsPerProject,
          );
    if (events.length === 0) {
      await client.query("COMMIT");
      return result;
    }
    result.events = events.length;
    const byProject = new Map<string, OutboxEvent[]>();
    for (const event of events) {
      const list = byProject.get(event.projectId);
      if (list) list.push(event);
      else byProject.set(event.projectId, [event]);
    }
    result.more = [...byProject.values()].some((list) => list.length >= options.eventsPerProject);
    const endpoints = await client.query<{
      id: string;
      projectId: string;
      events: string[];
      createdAtMs: number;
    }>({
      name: "postern-webhook-dispatch-endpoints",
      text: `SELECT "id", "projectId", "events", extract(epoch FROM "createdAt")::float8 * 1000 AS "createdAtMs"
FROM "WebhookEndpoint" WHERE "projectId" = ANY($1::uuid[]) AND "status" = 'active'`,
      values: [[...byProject.keys()]],
    });
    const rows = {
      id: [] as string[],
      endpointId: [] as string[],
      eventId: [] as string[],
      type: [] as string[],
      payload: [] as string[],
    };
    for (const endpoint of endpoints.rows) {
      const subscribed = new Set(endpoint.events);
      for (const event of byProject.get(endpoint.projectId) ?? []) {
        if (!subscribed.has(event.type) || event.createdAt.getTime() < endpoint.createdAtMs) continue;
        rows.id.push(uuidv7());
        rows.endpointId.push(endpoint.id);
        rows.eventId.push(event.id.toString());
        rows.type.push(event.type);
        rows.payload.push(JSON.stringify(webhookEventOf(event)));
      }
    }
    if (rows.id.length > 0) {
      const created = await client.query<{ endpointId: string }>({
        name: "postern-webhook-deliveries-create",
        text: `INSERT INTO "WebhookDelivery" ("id", "endpointId", "eventId", "eventType", "payload", "status", "nextAttemptAt", "createdAt", "updatedAt")
SELECT t.id, t.endpoint_id, t.event_id, t.type, t.payload, 'pending', ${utc("$6")}, ${utc("$6")}, ${utc("$6")}
FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[]) AS t(id, endpoint_id, event_id, type, payload)
RETURNING "endpointId"`,
        values: [rows.id, rows.endpointId, rows.eventId, rows.type, rows.payload, now],
      });
      for (const { endpointId } of created.rows)
        result.deliveries.set(endpointId, (result.deliveries.get(endpointId) ?? 0) + 1);
    }
    const last = [...byProject].map(([projectId, list]) => ({
      projectId,
      event: list.at(-1) as OutboxEvent,
    }));
    await client.query({
      name: "postern-webhook-cursors-move",
      text: `UPDATE "WebhookCursor" c SET "txId" = u.tx_id, "eventId" = u.event_id, "updatedAt" = ${utc("$4")}
FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(project_id, tx_id, event_id)
WHERE c."projectId" = u.project_id`,
      values: [
        last.map((l) => l.projectId),
        last.map((l) => l.event.txId.toString()),
        last.map((l) => l.event.id.toString()),
        now,
      ],
    });
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/** A due delivery, to be sent. */
export interface DueDelivery {
  id: string;
  payload: WebhookEvent;
  /** Failed attempts since it was created or replayed. */
  retryStep: number;
}

export interface DueBatch {
  /** Undefined when the endpoint is not active (disabled or deleted). */
  endpoint: { url: string; secretSealed: string } | undefined;
  deliveries: DueDelivery[];
}

/**
 * Up to `limit` of an active endpoint's deliveries due now, oldest due first, leaving out those
 * being sent (`sending`). Only the job that holds the endpoint's serving lease calls it (queue.ts),
 * so no row needs a claim of its own.
 */
export async function dueDeliveries(
  sql: Sql,
  endpointId: string,
  options: { limit: number; sending: string[]; now?: Date },
): Promise<DueBatch> {
  const { rows } = await sql.query<{
    id: string | null;
    payload: WebhookEvent | null;
    retryStep: number | null;
    url: string;
    secretSealed: string;
  }>({
    name: "postern-webhook-due",
    text: `SELECT d."id", d."payload", d."retryStep", e."url", e."secretSealed"
FROM "WebhookEndpoint" e
LEFT JOIN LATERAL (
  SELECT "id", "payload", "retryStep", "nextAttemptAt" FROM "WebhookDelivery"
  WHERE "endpointId" = e."id" AND "status" = 'pending' AND "nextAttemptAt" <= ${utc("$2")}
    AND "id" <> ALL($3::uuid[])
  ORDER BY "nextAttemptAt", "id"
  LIMIT $4::int
) d ON true
WHERE e."id" = $1::uuid AND e."status" = 'active'
ORDER BY d."nextAttemptAt", d."id"`,
    values: [endpointId, (options.now ?? new Date()).toISOString(), options.sending, options.limit],
  });
  const first = rows[0];
  if (!first) return { endpoint: undefined, deliveries: [] };
  return {
    endpoint: { url: first.url, secretSealed: first.secretSealed },
    deliveries: rows
      .filter((row) => row.id !== null)
      .map((row) => ({
        id: row.id as string,
        payload: row.payload as WebhookEvent,
        retryStep: row.retryStep as number,
      })),
  };
}

/** What became of one attempt, and so of its delivery. */
export interface AttemptRecord {
  deliveryId: string;
  endpointId: string;
  /** `pending`: to be retried at `nextAttemptAt`. */
  status: "succeeded" | "failed" | "pending";
  nextAttemptAt: Date | null;
  startedAt: Date;
  durationMs: number;
  statusCode: number | null;
  response: string | null;
  error: string | null;
}

/** An endpoint the record statement disabled (WEBHOOK_DISABLE_AFTER). */
export interface DisabledEndpoint {
  id: string;
  projectId: string;
}

/**
 * Records attempts, many in one statement (group commit, committed as `asyncCommit` says): each
 * delivery's status, next attempt and last answer, its attempt row, and its endpoint's health. An endpoint with a success is healthy
 * again (`failingSince` cleared); one whose attempts all failed keeps the time of its first
 * failure, and once that is `disableAfterMs` old it is disabled, with its `webhook.disabled` audit
 * event, in the same statement.
 */
export async function recordAttempts(
  sql: Sql,
  records: AttemptRecord[],
  options: { disableAfterMs: number; now?: Date },
): Promise<DisabledEndpoint[]> {
  if (records.length === 0) return [];
  const now = options.now ?? new Date();
  const { rows } = await sql.query<DisabledEndpoint>({
    name: "postern-webhook-record",
    text: `WITH input AS (
  SELECT t.*, ${asyncCommitColumn} AS async_commit
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[], $9::text[], $10::uuid[])
    WITH ORDINALITY AS t(delivery_id, endpoint_id, status, next_attempt_at, started_at, duration_ms, status_code, response, error, attempt_id, n)
), updated AS (
  UPDATE "WebhookDelivery" d SET
    "status" = i.status::"WebhookDeliveryStatus",
    "attempts" = d."attempts" + 1,
    "retryStep" = CASE WHEN i.status = 'succeeded' THEN d."retryStep" ELSE d."retryStep" + 1 END,
    "nextAttemptAt" = (i.next_attempt_at::timestamptz AT TIME ZONE 'UTC'),
    "lastStatusCode" = i.status_code,
    "lastError" = i.error,
    "updatedAt" = ${utc("$11")},
    "completedAt" = CASE WHEN i.status = 'pending' THEN NULL ELSE ${utc("$11")} END
  FROM input i WHERE d."id" = i.delivery_id
  RETURNING d."id", d."endpointId", d."attempts", i.attempt_id, i.status, i.started_at, i.duration_ms, i.status_code, i.response, i.error
), attempt AS (
  INSERT INTO "WebhookAttempt" ("id", "deliveryId", "number", "startedAt", "durationMs", "statusCode", "response", "error")
  SELECT u.attempt_id, u."id", u."attempts", (u.started_at::timestamptz AT TIME ZONE 'UTC'), u.duration_ms, u.status_code, u.response, u.error
  FROM updated u
  ON CONFLICT ("deliveryId", "number") DO NOTHING
), outcome AS (
  SELECT u."endpointId" AS id, bool_or(u.status = 'succeeded') AS ok,
    min(u.started_at::timestamptz AT TIME ZONE 'UTC') FILTER (WHERE u.status <> 'succeeded') AS first_failure
  FROM updated u GROUP BY u."endpointId"
), judged AS (
  SELECT e."id", e."projectId", e."failingSince" AS was_failing_since,
    CASE WHEN o.ok THEN NULL ELSE COALESCE(e."failingSince", o.first_failure) END AS failing_since,
    (NOT o.ok AND e."status" = 'active'
      AND COALESCE(e."failingSince", o.first_failure) <= ${utc("$12")}) AS disable
  FROM "WebhookEndpoint" e JOIN outcome o ON o.id = e."id"
), health AS (
  UPDATE "WebhookEndpoint" e SET
    "failingSince" = j.failing_since,
    "status" = CASE WHEN j.disable THEN 'disabled'::"WebhookEndpointStatus" ELSE e."status" END,
    "disabledAt" = CASE WHEN j.disable THEN ${utc("$11")} ELSE e."disabledAt" END,
    "disabledReason" = CASE WHEN j.disable THEN 'failing' ELSE e."disabledReason" END
  FROM judged j
  WHERE e."id" = j."id" AND (j.disable OR j.failing_since IS DISTINCT FROM j.was_failing_since)
  RETURNING e."id", e."projectId", j.disable, j.failing_since
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "details")
  SELECT ${utc("$11")}, h."projectId", 'system', 'webhook.disabled',
    jsonb_build_object('webhookId', h."id", 'reason', 'failing',
      'failingSince', to_char(h.failing_since, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
  FROM health h WHERE h.disable
)
SELECT h."id", h."projectId" FROM health h WHERE h.disable`,
    values: [
      records.map((r) => r.deliveryId),
      records.map((r) => r.endpointId),
      records.map((r) => r.status),
      records.map((r) => r.nextAttemptAt?.toISOString() ?? null),
      records.map((r) => r.startedAt.toISOString()),
      records.map((r) => r.durationMs),
      records.map((r) => r.statusCode),
      records.map((r) => r.response),
      records.map((r) => r.error),
      records.map(() => uuidv7()),
      now.toISOString(),
      new Date(now.getTime() - options.disableAfterMs).toISOString(),
    ],
  });
  return rows;
}

/** When the endpoint's next pending delivery is due; undefined: none (or the endpoint is not active). */
export async function nextDueAt(sql: Sql, endpointId: string): Promise<Date | undefined> {
  const { rows } = await sql.query<{ dueMs: number | null }>({
    name: "postern-webhook-next-due",
    text: `SELECT extract(epoch FROM min(d."nextAttemptAt"))::float8 * 1000 AS "dueMs"
FROM "WebhookDelivery" d JOIN "WebhookEndpoint" e ON e."id" = d."endpointId" AND e."status" = 'active'
WHERE d."endpointId" = $1::uuid AND d."status" = 'pending'`,
    values: [endpointId],
  });
  const dueMs = rows[0]?.dueMs;
  return dueMs === null || dueMs === undefined ? undefined : new Date(Math.round(dueMs));
}

/**
 * Active endpoints with a delivery due: the sweeper wakes each (its wake-up was lost with Redis, or
 * with the worker that would have served it; a job for an endpoint already served ends at once).
 */
export async function endpointsWithDueDeliveries(sql: Sql, now = new Date()): Promise<string[]> {
  const { rows } = await sql.query<{ endpointId: string }>({
    name: "postern-webhook-due-endpoints",
    text: `SELECT e."id" AS "endpointId" FROM "WebhookEndpoint" e
WHERE e."status" = 'active' AND EXISTS (
  SELECT 1 FROM "WebhookDelivery" d
  WHERE d."endpointId" = e."id" AND d."status" = 'pending' AND d."nextAttemptAt" <= ${utc("$1")})`,
    values: [now.toISOString()],
  });
  return rows.map((row) => row.endpointId);
}

const pruneBatch = {
  name: "postern-webhook-delivery-prune",
  text: `
DELETE FROM "WebhookDelivery"
WHERE "id" = ANY (ARRAY(SELECT "id" FROM "WebhookDelivery" WHERE "status" <> 'pending' ORDER BY "id" LIMIT $2::int))
  AND "createdAt" < $1::timestamp(3)`,
};

/**
 * Deletes finished deliveries (succeeded or failed) created before `olderThan`, with their attempts,
 * oldest first, in statements of at most `batchSize` rows; pending ones stay, whatever their age.
 */
export function pruneWebhookDeliveries(sql: Sql, olderThan: Date, batchSize?: number): Promise<number> {
  return pruneInBatches(sql, pruneBatch, olderThan, batchSize);
}
