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

/** A job of this project left the queue (delivered, failed or moved to a later retry). */
export async function leaveBacklog(redis: Redis, prefix: string, projectId: string): Promise<void> {
  const left = await redis.hincrby(backlogKey(prefix), projectId, -1);
  if (left <= 0) await redis.hdel(backlogKey(prefix), projectId);
}

/** Replaces every project's count with the truth from PostgreSQL (the sweeper's view). */
export async function resetBacklog(redis: Redis, prefix: string, counts: Map<string, number>): Promise<void> {
  const key = backlogKey(prefix);
  const transaction = redis.multi().del(key);
  if (counts.size > 0) transaction.hset(key, Object.fromEntries(counts));
  await transaction.exec();
}
