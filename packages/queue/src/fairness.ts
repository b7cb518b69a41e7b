import { keyFamily, type Redis } from "./redis";

/**
 * Fairness between projects on one BullMQ queue.
 *
 * BullMQ's open-source limiter is per queue, so the tenant share is built here: a job's priority
 * is its project's backlog (messages waiting for delivery) when it is enqueued. Lower priority
 * runs first, equal priorities run in insertion order, so the next free worker slot goes to the
 * project with the shortest backlog: a project that queued 2,000 messages gets priorities
 * 1..2,000 and a project that then queues one message gets priority 1 and runs next.
 *
 * Within a project, mail must still leave in the order it came. The backlog alone would break
 * that as soon as it shrinks: with 1,500 waiting and 500 delivered since, a new message would get
 * 1,000 and overtake the 500 queued before it, again and again while the backlog holds level (as
 * in-flow control keeps it), leaving early messages waiting for minutes. So a project's priority
 * never goes down while it has messages waiting: it is the larger of its backlog and the last
 * priority it was given, and it starts again from the backlog once the project's queue is empty.
 * The counts live in two Redis hashes (field = project id); workers decrement when a job leaves
 * the queue and the sweeper lowers them to what PostgreSQL has queued (`resetBacklog`), so an
 * over-count (duplicate adds, decrements lost in a crash) heals at every sweep. Both hashes are
 * of the delivery queue's key family (`deliveryQueueName`; one slot on a cluster), since the
 * scripts below take both.
 */
export function backlogKey(redis: Redis, prefix: string): string {
  return `${keyFamily(redis, prefix, "delivery")}:backlog`;
}

/** The last priority each project with waiting messages was given. */
export function lastPriorityKey(redis: Redis, prefix: string): string {
  return `${keyFamily(redis, prefix, "delivery")}:last-priority`;
}

/** BullMQ accepts priorities 1..2^21-1 (0 would mean "before every prioritised job"). */
const highestPriorityNumber = 2 ** 21 - 1;

const enterScript = `
local priorities = {}
for i, project in ipairs(ARGV) do
  local backlog = redis.call('HINCRBY', KEYS[1], project, 1)
  local last = tonumber(redis.call('HGET', KEYS[2], project) or '0')
  local priority = math.min(math.max(backlog, last), ${highestPriorityNumber})
  redis.call('HSET', KEYS[2], project, priority)
  priorities[i] = priority
end
return priorities`;

/**
 * Counts messages into their projects' backlogs (one Redis round trip for all) and returns each
 * one's job priority, in order.
 */
export async function enterBacklog(redis: Redis, prefix: string, projectIds: string[]): Promise<number[]> {
  if (projectIds.length === 0) return [];
  return (await withScripts(redis).posternBacklogEnter(
    backlogKey(redis, prefix),
    lastPriorityKey(redis, prefix),
    ...projectIds,
  )) as number[];
}

const totalScript = `
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(count) end
return total`;

/**
 * Messages waiting for a worker, every project's backlog added up: the queue's size for the
 * `postern_delivery_queued_messages` gauge (in-flow control holds a project for its own backlog,
 * `countQueuedMessagesByProject`). Counted in messages, not jobs, since a job carries
 * every message of a project that one accept statement committed. One Lua call, a field per
 * project with messages queued; delayed retries are not in it (`RetryOptions`).
 */
export async function countQueuedMessages(redis: Redis, prefix: string): Promise<number> {
  return Math.max(0, Number(await withScripts(redis).posternBacklogTotal(backlogKey(redis, prefix))));
}

/**
 * Jobs leaving the queue (delivered, failed or moved to a later retry), counted out of their
 * projects' backlogs in batches: one Redis round trip per `flushMs` for every job that left in
 * that time, instead of one or two per job. The counts are priorities, not truth: a decrement
 * that arrives `flushMs` late, or is lost with the process, only shifts a priority until the
 * next sweep lowers the counts to what PostgreSQL has queued.
 */
export interface BacklogLedger {
  leave(projectId: string): void;
  /** Writes what is pending (at shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Decrements and drops counts that reach zero atomically, so a concurrent enqueue's count is not
 * deleted; a project whose queue is empty starts its priorities from its backlog again.
 */
const leaveScript = `
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return 0`;

export function createBacklogLedger(
  redis: Redis,
  prefix: string,
  options: { flushMs?: number; onError?: (error: unknown) => void } = {},
): BacklogLedger {
  const keys = [backlogKey(redis, prefix), lastPriorityKey(redis, prefix)];
  let pending = new Map<string, number>();
  let flushing: Promise<void> = Promise.resolve();
  const flush = () => {
    if (pending.size === 0) return flushing;
    const batch = pending;
    pending = new Map();
    const args = [...batch].flatMap(([projectId, count]) => [projectId, String(count)]);
    flushing = flushing
      .then(() => withScripts(redis).posternBacklogLeave(...keys, ...args))
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

/**
 * Lowers each project's count to what PostgreSQL has queued for it (the sweeper's view, ARGV:
 * project, count, project, count, ...), never raises one; a count that reaches zero goes, and the
 * last priority with it.
 *
 * PostgreSQL's `queued` is an upper bound of the truth, not the truth: it also holds the messages a
 * worker has taken and not yet recorded, which have already left the backlog. Replacing the counts
 * with it under load put those back for good (their leave had been counted), and in-flow control
 * held every transaction of the project for its full delay until the next sweep, long after the
 * queue had drained. What the reset is for is the other way: decrements lost with a killed worker
 * leave counts too high, and the bound brings them down. A count too low (an increment lost with
 * Redis data, which also loses the jobs the sweeper then re-adds, counting them) heals when the
 * project's backlog empties.
 */
const resetScript = `
local truth = {}
for i = 1, #ARGV, 2 do truth[ARGV[i]] = tonumber(ARGV[i + 1]) end
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local project = fields[i]
  local bound = truth[project] or 0
  if bound <= 0 then
    redis.call('HDEL', KEYS[1], project)
  elseif tonumber(fields[i + 1]) > bound then
    redis.call('HSET', KEYS[1], project, bound)
  end
end
for _, project in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not truth[project] or truth[project] <= 0 then redis.call('HDEL', KEYS[2], project) end
end
return 0`;

export async function resetBacklog(redis: Redis, prefix: string, counts: Map<string, number>): Promise<void> {
  const args = [...counts].flatMap(([projectId, count]) => [projectId, String(count)]);
  await withScripts(redis).posternBacklogReset(
    backlogKey(redis, prefix),
    lastPriorityKey(redis, prefix),
    ...args,
  );
}

/**
 * The scripts above as ioredis commands: each goes whole (`EVAL`) the first time on a connection
 * and by its SHA1 (`EVALSHA`) after that, where `redis.eval` sent the whole text every time, about
 * once per delivery job. Defined on each connection the first time it runs one of them.
 */
const scripts = {
  posternBacklogEnter: { numberOfKeys: 2, lua: enterScript },
  posternBacklogTotal: { numberOfKeys: 1, lua: totalScript },
  posternBacklogLeave: { numberOfKeys: 2, lua: leaveScript },
  posternBacklogReset: { numberOfKeys: 2, lua: resetScript },
};

type FairnessRedis = Redis & Record<keyof typeof scripts, (...keysAndArgs: string[]) => Promise<unknown>>;

function withScripts(redis: Redis): FairnessRedis {
  if (!("posternBacklogEnter" in redis))
    for (const [name, definition] of Object.entries(scripts)) redis.defineCommand(name, definition);
  return redis as FairnessRedis;
}
