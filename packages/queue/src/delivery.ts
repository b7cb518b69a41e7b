import { DelayedError, type JobsOptions, Queue, UnrecoverableError, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { enterBacklog } from "./fairness";

/** The queue of delivery work. Its jobs carry the message's ids; PostgreSQL has the rest. */
export const deliveryQueueName = "delivery";

export interface DeliveryJob {
  messageId: string;
  /**
   * The project, so that a worker can wait for one of the project's connections before it loads
   * the body. Absent from jobs queued by earlier versions: those load first, then wait.
   */
  projectId?: string;
}

/** What a message needs to be queued for delivery. */
export interface DeliverableMessage {
  id: string;
  projectId: string;
}

/**
 * The producing side of delivery, used by the SMTP accept step, the sweeper and the API's retry.
 * Adding is idempotent: the job id is the message id, so adding a message that already has a
 * live job does nothing.
 */
export interface DeliveryProducer {
  enqueue(message: DeliverableMessage, options?: { delayMs?: number }): Promise<void>;
  /** The same for many messages in two Redis round trips (sweeper, batched accepts). */
  enqueueMany(messages: DeliverableMessage[], options?: { delayMs?: number }): Promise<void>;
  /**
   * An attempt now (the API's retry): a job waiting for its backoff delay is promoted, a message
   * without a job gets one. The caller first makes the message deliverable again in PostgreSQL
   * (status `deferred`, the recipients to retry `pending`): the worker skips final messages.
   */
  deliverNow(message: DeliverableMessage): Promise<void>;
  close(): Promise<void>;
}

/**
 * Job options every delivery job gets. Finished jobs are removed so that the job id (= message id)
 * can be added again by the sweeper or a retry. `attempts`/`backoff` only cover unexpected errors
 * (PostgreSQL unreachable while loading or recording): an upstream's verdict is never retried by
 * BullMQ, the worker schedules deferrals itself and ends failures with UnrecoverableError.
 */
export const deliveryJobOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 8,
  backoff: { type: "exponential", delay: 2_000 },
} satisfies JobsOptions;

export function createDeliveryQueue(connection: Redis, prefix: string): Queue<DeliveryJob> {
  const queue = new Queue<DeliveryJob>(deliveryQueueName, { connection, prefix });
  // Connection errors surface as failed calls (which callers handle) and in /health/ready;
  // without a listener BullMQ would also print each one to stderr.
  queue.on("error", () => {});
  return queue;
}

/**
 * Delivery jobs waiting for a worker: BullMQ keeps them in `wait` (jobs without a priority) and
 * `prioritized` (every job of the fairness scheme); delayed retries and active jobs are not
 * waiting. One Lua call of an LLEN and a ZCARD, whatever the queue's size; the same count as the
 * `waiting` state of `postern_delivery_queue_jobs`.
 */
export async function countWaitingDeliveries(queue: Queue<DeliveryJob>): Promise<number> {
  const counts = await queue.getJobCounts("waiting", "prioritized");
  return (counts.waiting ?? 0) + (counts.prioritized ?? 0);
}

export function createDeliveryProducer(connection: Redis, prefix: string): DeliveryProducer {
  const queue = createDeliveryQueue(connection, prefix);
  const enqueueMany = async (messages: DeliverableMessage[], options: { delayMs?: number } = {}) => {
    if (messages.length === 0) return;
    // Count each message into its project's backlog first: that gives the job's priority, so a
    // project with a short backlog overtakes one with a long backlog (see fairness.ts).
    const priorities = await enterBacklog(
      connection,
      prefix,
      messages.map((message) => message.projectId),
    );
    await queue.addBulk(
      messages.map((message, i) => ({
        name: "deliver",
        data: { messageId: message.id, projectId: message.projectId },
        opts: {
          ...deliveryJobOptions,
          jobId: message.id,
          delay: options.delayMs ?? 0,
          priority: priorities[i],
        },
      })),
    );
  };
  return {
    enqueue: (message, options) => enqueueMany([message], options),
    enqueueMany,
    async deliverNow(message) {
      const job = await queue.getJob(message.id);
      if (job && (await job.isDelayed())) await job.promote();
      else await enqueueMany([message]);
    },
    async close() {
      await queue.close();
    },
  };
}

/** What the delivery processor tells the queue about a job. */
export type DeliveryJobResult =
  | { kind: "done" }
  /** Try again later: the job waits, delayed, under the same id (no BullMQ attempt is used). */
  | { kind: "retry"; delayMs: number }
  /** Final: BullMQ must not retry it (UnrecoverableError). */
  | { kind: "failed"; reason: string };

export interface DeliveryWorkerOptions {
  concurrency: number;
  /** How long a job's lock lives without renewal: a killed worker's jobs run again after it. */
  stalledTimeoutMs: number;
}

/**
 * The consuming side: runs `process` for each job with `concurrency` in flight. Jobs of a worker
 * that died (SIGKILL, lost network) are moved back to waiting by the stalled-job check of any
 * live worker after `stalledTimeoutMs`.
 */
export function createDeliveryWorker(
  connection: Redis,
  prefix: string,
  process: (job: DeliveryJob) => Promise<DeliveryJobResult>,
  options: DeliveryWorkerOptions,
): Worker<DeliveryJob> {
  return new Worker<DeliveryJob>(
    deliveryQueueName,
    async (job, token) => {
      const result = await process(job.data);
      if (result.kind === "retry") {
        await job.moveToDelayed(Date.now() + result.delayMs, token);
        throw new DelayedError();
      }
      if (result.kind === "failed") throw new UnrecoverableError(result.reason);
    },
    {
      connection,
      prefix,
      concurrency: options.concurrency,
      lockDuration: options.stalledTimeoutMs,
      stalledInterval: options.stalledTimeoutMs,
      // A job whose worker keeps dying is failed (and removed); the sweeper re-adds it from
      // PostgreSQL, so nothing is lost, but a poison message cannot loop here.
      maxStalledCount: 2,
      autorun: false,
    },
  );
}
