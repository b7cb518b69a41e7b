import { pruneAuditEvents } from "@postern/audit";
import type { ResolvedConfig } from "@postern/config";
import type { SqlPool } from "@postern/db";
import { type DeliveryJob, type DeliveryProducer, type Redis, resetBacklog } from "@postern/queue";
import type { Queue } from "bullmq";

export interface SweeperDeps {
  config: Pick<ResolvedConfig, "redisKeyPrefix" | "delivery" | "auditRetentionDays">;
  /** The worker's `pg` pool (`sqlPoolOf`): the delivery worker runs no Prisma query, see below. */
  sql: Pick<SqlPool, "query">;
  redis: Redis;
  queue: Queue<DeliveryJob>;
  producer: DeliveryProducer;
  /** Rows one audit-pruning statement deletes at most; packages/audit's default when not given. */
  auditPruneBatchSize?: number;
}

export interface SweepResult {
  /** Messages that had no job and got one. */
  requeued: number;
  prunedBodies: number;
  prunedAuditEvents: number;
}

const pageSize = 1000;

/*
 * Raw SQL over the worker's pool, as the delivery store's: a worker's first Prisma query would load
 * Prisma's query compiler, about 65 MB of RSS (docs/benchmarks.md). Timestamps cross as ISO strings cast to `timestamp(3)`, as
 * in store.ts: the columns hold UTC without a zone.
 */

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
ORDER BY "id" LIMIT ${pageSize}`;

interface DueMessage {
  id: string;
  projectId: string;
  deliveryJobId: string | null;
}

const backlogSql = `
SELECT "projectId", count(*)::int AS "count" FROM "Message" WHERE "status" = 'queued' GROUP BY "projectId"`;

/** Only finished messages: a pending message's body is the only copy of mail we accepted. */
const pruneSql = `
DELETE FROM "MessageBody" b USING "Message" m
WHERE m."id" = b."messageId" AND b."createdAt" < $1::timestamp(3) AND m."status" IN ('delivered', 'failed')`;

/**
 * PostgreSQL is the truth and Redis only holds work, so the sweeper rebuilds work from truth:
 * every `queued` message and every `deferred` message whose retry is due must have a job (its own,
 * or the one its accept statement planned for it); those without one (crash between commit and
 * enqueue, Redis flushed or lost) get one of their own. Adding is idempotent by job id, and a job
 * for a message that meanwhile became final is skipped by the worker, so a sweep racing with
 * deliveries is harmless. It also resets the fairness backlog
 * counts from PostgreSQL, prunes bodies of finished messages past BODY_RETENTION_DAYS and audit
 * events past AUDIT_RETENTION_DAYS.
 */
export async function sweep(deps: SweeperDeps, now = new Date()): Promise<SweepResult> {
  const { sql, redis, queue, producer, config } = deps;
  let requeued = 0;
  let cursor: string | null = null;
  const acceptedBefore = new Date(now.getTime() - config.delivery.sweepIntervalMs).toISOString();
  for (;;) {
    const { rows: page }: { rows: DueMessage[] } = await sql.query<DueMessage>(dueSql, [
      now.toISOString(),
      cursor,
      acceptedBefore,
    ]);
    if (page.length === 0) break;
    cursor = page[page.length - 1]?.id ?? null;
    // A message's job is its own (retries, earlier sweeps, messages accepted alone) or the one
    // its accept statement planned for it: either alive means the message will be tried.
    const exists = redis.pipeline();
    for (const message of page) {
      exists.exists(queue.toKey(message.id), queue.toKey(message.deliveryJobId ?? message.id));
    }
    const answers = (await exists.exec()) ?? [];
    const missing = page.filter((_, i) => Number(answers[i]?.[1]) === 0);
    await producer.enqueueMany(missing);
    requeued += missing.length;
    if (page.length < pageSize) break;
  }

  const { rows: backlog } = await sql.query<{ projectId: string; count: number }>(backlogSql);
  await resetBacklog(redis, config.redisKeyPrefix, new Map(backlog.map((row) => [row.projectId, row.count])));

  let prunedBodies = 0;
  if (config.delivery.bodyRetentionDays > 0) {
    const cutoff = new Date(now.getTime() - config.delivery.bodyRetentionDays * 86_400_000);
    prunedBodies = (await sql.query(pruneSql, [cutoff.toISOString()])).rowCount ?? 0;
  }
  let prunedAuditEvents = 0;
  if (config.auditRetentionDays > 0) {
    const cutoff = new Date(now.getTime() - config.auditRetentionDays * 86_400_000);
    prunedAuditEvents = await pruneAuditEvents(sql, cutoff, deps.auditPruneBatchSize);
  }
  return { requeued, prunedBodies, prunedAuditEvents };
}

/**
 * Runs `sweep` every DELIVERY_SWEEP_INTERVAL. With several workers (threads or processes) only one sweeps per
 * interval (a Redis lock that expires by itself, so a dead holder cannot block the next sweep).
 */
export function startSweeper(
  deps: SweeperDeps,
  onResult: (result: SweepResult) => void,
  onError: (error: unknown) => void,
): { stop(): Promise<void> } {
  const lockKey = `${deps.config.redisKeyPrefix}:delivery:sweeper-lock`;
  const intervalMs = deps.config.delivery.sweepIntervalMs;
  let running: Promise<void> | undefined;
  const run = async () => {
    const locked = await deps.redis.set(
      lockKey,
      String(process.pid),
      "PX",
      Math.max(intervalMs - 100, 100),
      "NX",
    );
    if (locked !== "OK") return;
    onResult(await sweep(deps));
  };
  const tick = () => {
    if (running) return;
    running = run()
      .catch(onError)
      .finally(() => {
        running = undefined;
      });
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
