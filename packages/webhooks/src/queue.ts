import { uuidv7 } from "@postern/db";
import type { Redis } from "@postern/queue";
import { type JobsOptions, Queue } from "bullmq";

/**
 * The webhook queue's jobs name an endpoint, never a delivery: a job "serves" its endpoint, sending
 * the endpoint's due deliveries (PostgreSQL holds them) with at most WEBHOOK_ENDPOINT_CONCURRENCY
 * requests in flight, and ends when none is due. So an endpoint that is slow or dead holds one
 * worker slot at most, and its backlog waits in PostgreSQL, not in front of other endpoints' jobs
 * in the queue (no shared head of line).
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
  const queue = new Queue<WebhookJob>(webhookQueueName, { connection, prefix });
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
