import { pruneAuditEvents } from "@postern/audit";
import type { ResolvedConfig } from "@postern/config";
import type { SqlPool } from "@postern/db";
import {
  dueMessages,
  expireHolds,
  pruneBodies,
  pruneFingerprints,
  pruneMessageEvents,
  queuedBacklog,
  sweepPageSize,
} from "@postern/messages";
import { pruneExpiredSuppressions } from "@postern/projects";
import {
  type DeliveryJob,
  type DeliveryProducer,
  deliveryQueueName,
  keyFamily,
  type Redis,
  resetBacklog,
} from "@postern/queue";
import type { Queue } from "bullmq";

export interface SweeperDeps {
  config: Pick<ResolvedConfig, "redisKeyPrefix" | "delivery" | "auditRetentionDays" | "eventRetentionDays">;
  /** The worker's `pg` pool (`sqlPoolOf`): no Prisma in the worker (see @postern/messages sweep.ts). */
  sql: Pick<SqlPool, "query">;
  redis: Redis;
  queue: Queue<DeliveryJob>;
  producer: DeliveryProducer;
  /** Rows one audit-, event- or fingerprint-pruning statement deletes at most; `pruneInBatches`' default when not given. */
  pruneBatchSize?: number;
}

export interface SweepResult {
  /** Held messages past their project's hold time, approved or denied as the project says. */
  expiredHolds: { approved: number; denied: number };
  /** Messages that had no job and got one. */
  requeued: number;
  prunedBodies: number;
  prunedAuditEvents: number;
  prunedMessageEvents: number;
  /** Duplicate-suppression fingerprints whose window had ended. */
  prunedFingerprints: number;
  /** Suppressions whose `expiresAt` had passed (already ignored by every lookup). */
  prunedSuppressions: number;
}

/**
 * PostgreSQL is the truth and Redis only holds work, so the sweeper rebuilds work from truth:
 * every `queued` message and every `deferred` message whose retry is due must have a job (its own,
 * or the one its accept statement planned for it); those without one (crash between commit and
 * enqueue, Redis flushed or lost) get one of their own. Adding is idempotent by job id, and a job
 * for a message that meanwhile became final is skipped by the worker, so a sweep racing with
 * deliveries is harmless. First it settles held messages past their project's hold time
 * (`holdTtlMinutes`, `holdExpiry`), in batches, and adds a job for each one approved. It also
 * lowers the fairness backlog counts to what PostgreSQL has queued, prunes bodies of finished messages past
 * BODY_RETENTION_DAYS, audit events past AUDIT_RETENTION_DAYS, message events past
 * EVENT_RETENTION_DAYS, duplicate-suppression fingerprints past their window and expired
 * suppressions.
 */
export async function sweep(deps: SweeperDeps, now = new Date()): Promise<SweepResult> {
  const { sql, redis, queue, producer, config } = deps;
  const expiredHolds = { approved: 0, denied: 0 };
  for (;;) {
    const settled = await expireHolds(sql, now);
    const approved = settled.filter((hold) => hold.settledAs === "approve");
    // If Redis does not take the jobs, the loop below (this sweep or the next) enqueues them.
    await producer.enqueueMany(approved);
    expiredHolds.approved += approved.length;
    expiredHolds.denied += settled.length - approved.length;
    if (settled.length < sweepPageSize) break;
  }
  let requeued = 0;
  let cursor: string | null = null;
  const acceptedBefore = new Date(now.getTime() - config.delivery.sweepIntervalMs);
  for (;;) {
    const page = await dueMessages(sql, { now, after: cursor, acceptedBefore });
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
    if (page.length < sweepPageSize) break;
  }

  await resetBacklog(redis, config.redisKeyPrefix, await queuedBacklog(sql));

  // A retention of 0 days keeps everything.
  const daysAgo = (days: number) => new Date(now.getTime() - days * 86_400_000);
  const prunedBodies =
    config.delivery.bodyRetentionDays > 0
      ? await pruneBodies(sql, daysAgo(config.delivery.bodyRetentionDays))
      : 0;
  const prunedAuditEvents =
    config.auditRetentionDays > 0
      ? await pruneAuditEvents(sql, daysAgo(config.auditRetentionDays), deps.pruneBatchSize)
      : 0;
  const prunedMessageEvents =
    config.eventRetentionDays > 0
      ? await pruneMessageEvents(sql, daysAgo(config.eventRetentionDays), deps.pruneBatchSize)
      : 0;
  const prunedFingerprints = await pruneFingerprints(sql, now, deps.pruneBatchSize);
  const prunedSuppressions = await pruneExpiredSuppressions(sql, now, deps.pruneBatchSize);
  return {
    expiredHolds,
    requeued,
    prunedBodies,
    prunedAuditEvents,
    prunedMessageEvents,
    prunedFingerprints,
    prunedSuppressions,
  };
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
  const lockKey = `${keyFamily(deps.redis, deps.config.redisKeyPrefix, deliveryQueueName)}:sweeper-lock`;
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
