import { randomUUID } from "node:crypto";
import { DelayedError, type JobsOptions, Queue, UnrecoverableError, Worker } from "bullmq";
import pLimit from "p-limit";
import { type BacklogLedger, enterBacklog } from "./fairness";
import { queuePrefix, type Redis } from "./redis";

/** The queue of delivery work. Its jobs carry the messages' ids; PostgreSQL has the rest. */
export const deliveryQueueName = "delivery";

/**
 * A job delivers one message (job id = message id: the sweeper, retries, the API's retry, and a
 * message accepted alone) or the messages of one project accepted in one statement (a job id of
 * its own, written in each message's `deliveryJobId`). One job for a batch spares the queue's
 * scripts per message: adding, taking and finishing a job cost Redis a script call each and the
 * worker three round trips (docs/benchmarks-history.md, Twelfth round).
 */
export type DeliveryJob = SingleDeliveryJob | BatchDeliveryJob;

export interface SingleDeliveryJob {
  messageId: string;
  /**
   * The project, so that a worker can wait for one of the project's connections before it loads
   * the body. Absent from jobs queued by earlier versions: those load first, then wait.
   */
  projectId?: string;
}

export interface BatchDeliveryJob {
  messageIds: string[];
  projectId: string;
}

/** The messages a job carries, whatever its shape. */
export function messageIdsOf(job: DeliveryJob): string[] {
  return "messageIds" in job ? job.messageIds : [job.messageId];
}

/** A delivery job planned for messages about to be committed (see `planDeliveryJobs`). */
export interface PlannedDeliveryJob {
  id: string;
  projectId: string;
  messageIds: string[];
}

/**
 * Groups messages accepted together into one job per project, in their order. The job ids are
 * known before the commit so that each message row can name its job (`deliveryJobId`), which is
 * how the sweeper tells a message whose job is alive from one that lost it. A project's only
 * message keeps its own id as job id.
 */
export function planDeliveryJobs(messages: DeliverableMessage[]): PlannedDeliveryJob[] {
  const byProject = new Map<string, string[]>();
  for (const message of messages) {
    const ids = byProject.get(message.projectId);
    if (ids) ids.push(message.id);
    else byProject.set(message.projectId, [message.id]);
  }
  return [...byProject].map(([projectId, messageIds]) => ({
    id: messageIds.length === 1 ? (messageIds[0] as string) : randomUUID(),
    projectId,
    messageIds,
  }));
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
  enqueue(message: DeliverableMessage, options?: RetryOptions): Promise<void>;
  /** The same for many messages in two Redis round trips (the sweeper). */
  enqueueMany(messages: DeliverableMessage[], options?: RetryOptions): Promise<void>;
  /**
   * The jobs of messages just committed (`planDeliveryJobs`), in two Redis round trips. Their
   * messages count into their projects' backlogs, as `enqueueMany`'s do.
   */
  enqueuePlanned(jobs: PlannedDeliveryJob[]): Promise<void>;
  /**
   * An attempt now (the API's retry): a job waiting for its backoff delay is promoted, a message
   * without a job gets one. The caller first makes the message deliverable again in PostgreSQL
   * (status `deferred`, the recipients to retry `pending`): the worker skips final messages.
   */
  deliverNow(message: DeliverableMessage): Promise<void>;
  /** `deliverNow` for each of many messages (a bulk retry), 100 at a time. */
  deliverManyNow(messages: DeliverableMessage[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * A delayed job is a retry: its message is not new work, so it does not count into its project's
 * backlog, and it keeps the priority its first job had (`priority`, else the project's backlog).
 */
export interface RetryOptions {
  delayMs?: number;
  priority?: number;
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
  const queue = new Queue<DeliveryJob>(deliveryQueueName, {
    connection,
    prefix: queuePrefix(connection, prefix, deliveryQueueName),
  });
  // Connection errors surface as failed calls (which callers handle) and in /health/ready;
  // without a listener BullMQ would also print each one to stderr.
  queue.on("error", () => {});
  return queue;
}

export function createDeliveryProducer(connection: Redis, prefix: string): DeliveryProducer {
  const queue = createDeliveryQueue(connection, prefix);
  const add = async (
    jobs: { id: string; data: DeliveryJob & { projectId: string } }[],
    options: RetryOptions = {},
  ) => {
    if (jobs.length === 0) return;
    const delay = options.delayMs ?? 0;
    // Count each message into its project's backlog first: that gives the job's priority, so a
    // project with a short backlog overtakes one with a long backlog (see fairness.ts). A job of
    // several messages takes its first message's priority; the next job of the project starts
    // after its last.
    const priorities =
      delay > 0
        ? undefined
        : await enterBacklog(
            connection,
            prefix,
            jobs.flatMap((job) => messageIdsOf(job.data).map(() => job.data.projectId)),
          );
    let next = 0;
    await queue.addBulk(
      jobs.map((job) => {
        const priority = options.priority ?? priorities?.[next] ?? 1;
        next += messageIdsOf(job.data).length;
        return {
          name: "deliver",
          data: job.data,
          opts: { ...deliveryJobOptions, jobId: job.id, delay, priority },
        };
      }),
    );
  };
  const enqueueMany = (messages: DeliverableMessage[], options?: RetryOptions) =>
    add(
      messages.map((message) => ({
        id: message.id,
        data: { messageId: message.id, projectId: message.projectId },
      })),
      options,
    );
  const deliverNow = async (message: DeliverableMessage) => {
    const job = await queue.getJob(message.id);
    if (job && (await job.isDelayed())) await job.promote();
    else await enqueueMany([message]);
  };
  return {
    enqueue: (message, options) => enqueueMany([message], options),
    enqueueMany,
    enqueuePlanned: (jobs) =>
      add(
        jobs.map((job) => ({
          id: job.id,
          data:
            job.messageIds.length === 1 && job.id === job.messageIds[0]
              ? { messageId: job.id, projectId: job.projectId }
              : { messageIds: job.messageIds, projectId: job.projectId },
        })),
      ),
    deliverNow,
    async deliverManyNow(messages) {
      for (let i = 0; i < messages.length; i += 100) {
        await Promise.all(messages.slice(i, i + 100).map(deliverNow));
      }
    },
    async close() {
      await queue.close();
    },
  };
}

/** What the delivery processor tells the queue about a job. */
export type DeliveryJobResult =
  | { kind: "done" }
  /** Try again later: the message waits, delayed, in a job of its own id (no BullMQ attempt is used). */
  | { kind: "retry"; delayMs: number }
  /** Final: BullMQ must not retry it (UnrecoverableError). */
  | { kind: "failed"; reason: string };

export interface DeliveryWorkerOptions {
  /** Messages being delivered at once, whatever jobs they came in. */
  concurrency: number;
  /** A killed worker's jobs run again within this time (see `stallTimingOf`). */
  stalledTimeoutMs: number;
}

/**
 * BullMQ takes a job up again at the first stalled-job check that finds it still marked from the
 * check before and its lock gone. The lock lives `lockDuration` and is renewed every half of it,
 * so a dead worker's lock is gone between `lockDuration / 2` and `lockDuration` after the crash,
 * and the next check comes within `stalledInterval`: the job is taken up again within
 * `lockDuration + stalledInterval`. Half of the timeout each keeps that within the timeout
 * (a lock and a check of 30 s each, as before, meant up to twice the timeout).
 */
export function stallTimingOf(stalledTimeoutMs: number): { lockDuration: number; stalledInterval: number } {
  const half = Math.max(1, Math.floor(stalledTimeoutMs / 2));
  return { lockDuration: half, stalledInterval: half };
}

/**
 * How soon a message of a batch job is tried again after an unexpected error (PostgreSQL
 * unreachable while loading or recording): the first step of `deliveryJobOptions.backoff`, from
 * where its own job's BullMQ attempts take over.
 */
const batchErrorRetryMs = deliveryJobOptions.backoff.delay;

/**
 * The consuming side: runs `process` for each message of each job, at most `concurrency` messages
 * at once across jobs. Jobs of a worker that died (SIGKILL, lost network) are moved back to
 * waiting by the stalled-job check of any live worker within `stalledTimeoutMs`; a batch job then
 * runs whole again, and its messages already final are skipped.
 *
 * A message of a batch job that must wait (a deferral, or an unexpected error) leaves the batch:
 * it gets a delayed job of its own (job id = message id) through `retries`, as the sweeper would
 * give it, and the batch job ends once each of its messages has been tried.
 */
export function createDeliveryWorker(
  connection: Redis,
  prefix: string,
  process: (message: SingleDeliveryJob) => Promise<DeliveryJobResult>,
  options: DeliveryWorkerOptions & {
    retries: Pick<DeliveryProducer, "enqueueMany">;
    backlog: Pick<BacklogLedger, "leave">;
    /** An unexpected error delivering a message of a batch job (a single job's fails the job). */
    onBatchMessageError: (messageId: string, error: unknown) => void;
  },
): Worker<DeliveryJob> {
  const slots = pLimit(options.concurrency);
  return new Worker<DeliveryJob>(
    deliveryQueueName,
    async (job, token) => {
      const data = job.data;
      // A job's messages were counted into their project's backlog when it was added, unless it
      // was a retry (added with a delay); they leave it when a worker first takes the job, so the
      // backlog is what waits for a worker, whatever a worker has taken and not yet delivered.
      // A retry taken again (`moveToDelayed`), a stalled job taken over or a BullMQ retry after
      // an error has started before. Jobs of earlier versions without a project are left to the
      // sweeper's reset.
      const { projectId } = data;
      if (job.attemptsStarted <= 1 && !job.opts.delay && projectId) {
        for (const _ of messageIdsOf(data)) options.backlog.leave(projectId);
      }
      if (!("messageIds" in data)) {
        const result = await slots(() => process(data));
        if (result.kind === "retry") {
          await job.moveToDelayed(Date.now() + result.delayMs, token);
          throw new DelayedError();
        }
        if (result.kind === "failed") throw new UnrecoverableError(result.reason);
        return;
      }
      const { messageIds } = data;
      const settled = await Promise.allSettled(
        messageIds.map((messageId) => slots(() => process({ messageId, projectId }))),
      );
      const later = new Map<number, DeliverableMessage[]>();
      settled.forEach((outcome, i) => {
        if (outcome.status === "rejected")
          options.onBatchMessageError(messageIds[i] as string, outcome.reason);
        const delayMs =
          outcome.status === "rejected"
            ? batchErrorRetryMs
            : outcome.value.kind === "retry"
              ? outcome.value.delayMs
              : undefined;
        if (delayMs === undefined) return;
        const message = { id: messageIds[i] as string, projectId: data.projectId };
        later.set(delayMs, [...(later.get(delayMs) ?? []), message]);
      });
      for (const [delayMs, messages] of later) {
        await options.retries.enqueueMany(messages, { delayMs, priority: job.opts.priority });
      }
    },
    {
      connection,
      prefix: queuePrefix(connection, prefix, deliveryQueueName),
      // `slots` limits messages; jobs are taken as many as messages may run, so that single jobs
      // run as they always did, and batch jobs taken beyond the free slots wait for one here.
      concurrency: options.concurrency,
      ...stallTimingOf(options.stalledTimeoutMs),
      // A job whose worker keeps dying is failed (and removed); the sweeper re-adds its messages
      // from PostgreSQL, so nothing is lost, but a poison message cannot loop here.
      maxStalledCount: 2,
      autorun: false,
    },
  );
}
