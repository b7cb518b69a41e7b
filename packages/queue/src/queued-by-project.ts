import { backlogKey } from "./fairness";
import type { Redis } from "./redis";

/**
 * Messages waiting for a worker, per project: the fairness backlogs (fairness.ts) read whole, in
 * one round trip. What in-flow control holds a project's transactions for, so that one project's
 * backlog (a stuck upstream, a burst) slows that project's clients and no one else's. The hash has
 * a field only for projects with messages queued; a project without one has nothing queued.
 */
export async function countQueuedMessagesByProject(
  redis: Redis,
  prefix: string,
): Promise<Map<string, number>> {
  const fields = await redis.hgetall(backlogKey(redis, prefix));
  return new Map(Object.entries(fields).map(([projectId, count]) => [projectId, Number(count)]));
}
