import type { Redis } from "ioredis";

/**
 * Fairness between projects on one BullMQ queue.
 *
 * BullMQ's open-source limiter is per queue, so the tenant share is built here: every job's
 * priority is its project's backlog (messages waiting for delivery) at enqueue time. Lower
 * priority runs first, equal priorities run in insertion order, so the next free worker slot
 * goes to the project with the shortest backlog: a project that queued 2,000 messages gets
 * priorities 1..2,000 and a project that then queues one message gets priority 1 and runs next.
 * The counts live in one Redis hash (field = project id); workers decrement when a job leaves
 * the queue and the sweeper resets them from PostgreSQL, so drift (duplicate adds, crashes)
 * heals at every sweep.
 */
export function backlogKey(prefix: string): string {
  return `${prefix}:delivery:backlog`;
}

/** BullMQ accepts priorities 1..2^21-1 (0 would mean "before every prioritised job"). */
const highestPriorityNumber = 2 ** 21 - 1;

export function priorityFromBacklog(backlog: number): number {
  return Math.min(Math.max(1, Math.floor(backlog)), highestPriorityNumber);
}

/**
 * Jobs leaving the queue (delivered, failed or moved to a later retry), counted out of their
 * projects' backlogs in batches: one Redis round trip per `flushMs` for every job that left in
 * that time, instead of one or two per job. The counts are priorities, not truth: a decrement
 * that arrives `flushMs` late, or is lost with the process, only shifts a priority until the
 * next sweep resets the counts from PostgreSQL.
 */
export interface BacklogLedger {
  leave(projectId: string): void;
  /** Writes what is pending (at shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Decrements and drops counts that reach zero atomically, so a concurrent enqueue's count is not deleted. */
const leaveScript = `
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0`;

export function createBacklogLedger(
  redis: Redis,
  prefix: string,
  options: { flushMs?: number; onError?: (error: unknown) => void } = {},
): BacklogLedger {
  const key = backlogKey(prefix);
  let pending = new Map<string, number>();
  let flushing: Promise<void> = Promise.resolve();
  const flush = () => {
    if (pending.size === 0) return flushing;
    const batch = pending;
    pending = new Map();
    const args = [...batch].flatMap(([projectId, count]) => [projectId, String(count)]);
    flushing = flushing
      .then(() => redis.eval(leaveScript, 1, key, ...args))
      .then(
        () => {},
        (error) => options.onError?.(error),
      );
    return flushing;
  };
  const timer = setInterval(flush, options.flushMs ?? 50);
  timer.unref();
  return {
    leave(projectId) {
      pending.set(projectId, (pending.get(projectId) ?? 0) + 1);
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}

/** Replaces every project's count with the truth from PostgreSQL (the sweeper's view). */
export async function resetBacklog(redis: Redis, prefix: string, counts: Map<string, number>): Promise<void> {
  const key = backlogKey(prefix);
  const transaction = redis.multi().del(key);
  if (counts.size > 0) transaction.hset(key, Object.fromEntries(counts));
  await transaction.exec();
}
