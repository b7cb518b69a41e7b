import type { ResolvedConfig } from "@postern/config";
import type { Database } from "@postern/db";
import { type DeliveryJob, type DeliveryProducer, type Redis, resetBacklog } from "@postern/queue";
import type { Queue } from "bullmq";

export interface SweeperDeps {
  config: Pick<ResolvedConfig, "redisKeyPrefix" | "delivery">;
  db: Database;
  redis: Redis;
  queue: Queue<DeliveryJob>;
  producer: DeliveryProducer;
}

export interface SweepResult {
  /** Messages that had no job and got one. */
  requeued: number;
  prunedBodies: number;
}

const pageSize = 1000;

/**
 * PostgreSQL is the truth and Redis only holds work, so the sweeper rebuilds work from truth:
 * every `queued` message and every `deferred` message whose retry is due must have a job; those
 * without one (crash between commit and enqueue, Redis flushed or lost) are added again. Adding is
 * idempotent by job id, and a job for a message that meanwhile became final is skipped by the
 * worker, so a sweep racing with deliveries is harmless. It also resets the fairness backlog
 * counts from PostgreSQL and prunes bodies of finished messages past retention.
 */
export async function sweep(deps: SweeperDeps, now = new Date()): Promise<SweepResult> {
  const { db, redis, queue, producer, config } = deps;
  let requeued = 0;
  let cursor: string | undefined;
  for (;;) {
    const page = await db.message.findMany({
      where: { OR: [{ status: "queued" }, { status: "deferred", nextAttemptAt: { lte: now } }] },
      select: { id: true, projectId: true },
      orderBy: { id: "asc" },
      take: pageSize,
      ...(cursor ? { cursor: { id: cursor }, skip: 1 } : {}),
    });
    if (page.length === 0) break;
    cursor = page[page.length - 1]?.id;
    const exists = redis.pipeline();
    for (const message of page) exists.exists(queue.toKey(message.id));
    const answers = (await exists.exec()) ?? [];
    const missing = page.filter((_, i) => Number(answers[i]?.[1]) === 0);
    await producer.enqueueMany(missing);
    requeued += missing.length;
    if (page.length < pageSize) break;
  }

  const backlog = await db.message.groupBy({
    by: ["projectId"],
    where: { status: "queued" },
    _count: { _all: true },
  });
  await resetBacklog(
    redis,
    config.redisKeyPrefix,
    new Map(backlog.map((row) => [row.projectId, row._count._all])),
  );

  let prunedBodies = 0;
  if (config.delivery.bodyRetentionDays > 0) {
    const cutoff = new Date(now.getTime() - config.delivery.bodyRetentionDays * 86_400_000);
    // Only finished messages: a pending message's body is the only copy of mail we accepted.
    const pruned = await db.messageBody.deleteMany({
      where: { createdAt: { lt: cutoff }, message: { status: { in: ["delivered", "failed"] } } },
    });
    prunedBodies = pruned.count;
  }
  return { requeued, prunedBodies };
}

/**
 * Runs `sweep` every DELIVERY_SWEEP_INTERVAL. With several worker processes only one sweeps per
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
