import { uuidv7 } from "@postern/db";
import { keyFamily, queuePrefix, type Redis } from "@postern/queue";
import { type JobsOptions, Queue } from "bullmq";

/**
 * The webhook queue's jobs name an endpoint, never a delivery: a job "serves" its endpoint, sending
 * the endpoint's due deliveries (PostgreSQL holds them) with at most WEBHOOK_ENDPOINT_CONCURRENCY
 * requests in flight, and ends when none is due. One job at a time serves an endpoint, across
 * workers: it holds the endpoint's serving lease in Redis (`ServingLeases`); a job that finds the
 * lease held ends at once, the holder sending what it was woken for. So an endpoint that is slow or
 * dead holds one worker slot at most, and its backlog waits in PostgreSQL, not in front of other
 * endpoints' jobs in the queue (no shared head of line).
 */
export const webhookQueueName = "webhook";

export interface WebhookJob {
  endpointId: string;
}

/**
 * Finished jobs are removed; `attempts` covers unexpected errors only (PostgreSQL unreachable):
 * an endpoint's answers are recorded on its deliveries, never retried by BullMQ.
 */
const jobOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 5,
  backoff: { type: "exponential", delay: 2_000 },
} satisfies JobsOptions;

export interface WebhookWaker {
  /**
   * Adds a job for each endpoint, now (after its deliveries committed: a job that finds them
   * claimed by another, which serves them, ends at once) or at `at` (its next retry).
   */
  wake(endpointIds: string[], at?: Date): Promise<void>;
  close(): Promise<void>;
}

export function createWebhookWaker(connection: Redis, prefix: string): WebhookWaker {
  const queue = new Queue<WebhookJob>(webhookQueueName, {
    connection,
    prefix: queuePrefix(connection, prefix, webhookQueueName),
  });
  // Failed adds reach the caller; without a listener BullMQ would also print each one.
  queue.on("error", () => {});
  return {
    async wake(endpointIds, at) {
      if (endpointIds.length === 0) return;
      const delay = at ? Math.max(0, at.getTime() - Date.now()) : 0;
      await queue.addBulk(
        endpointIds.map((endpointId) => ({
          name: "serve",
          data: { endpointId },
          // A wake-up now is never merged with a job of the endpoint that is running (it may be
          // ending): each gets an id of its own. Wake-ups for one instant are one job.
          opts: {
            ...jobOptions,
            delay,
            jobId: at ? `${endpointId}.at.${at.getTime()}` : `${endpointId}.${uuidv7()}`,
          },
        })),
      );
    },
    async close() {
      await queue.close();
    },
  };
}

/**
 * Who serves each endpoint: a Redis key per endpoint holding the serving job's token, with a time
 * to live that the holder renews while it runs, so that a worker that dies leaves it for another
 * within `leaseMs` (the sweeper then wakes the endpoint).
 */
export interface ServingLeases {
  /** The lease for `token`, or false when another job holds it. */
  acquire(endpointId: string, token: string): Promise<boolean>;
  /** Extends the lease while `token` holds it. */
  renew(endpointId: string, token: string): Promise<void>;
  /** Gives it up, if `token` still holds it. */
  release(endpointId: string, token: string): Promise<void>;
}

const renewScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const releaseScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export function createServingLeases(redis: Redis, prefix: string, leaseMs: number): ServingLeases {
  const key = (endpointId: string) => `${keyFamily(redis, prefix, webhookQueueName)}:serving:${endpointId}`;
  return {
    async acquire(endpointId, token) {
      return (await redis.set(key(endpointId), token, "PX", leaseMs, "NX")) === "OK";
    },
    async renew(endpointId, token) {
      await redis.eval(renewScript, 1, key(endpointId), token, String(leaseMs));
    },
    async release(endpointId, token) {
      await redis.eval(releaseScript, 1, key(endpointId), token);
    },
  };
}
