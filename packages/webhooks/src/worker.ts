import { openSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import type { SqlPool } from "@postern/db";
import { createGroupCommit } from "@postern/messages";
import { type Redis, retryDelayMs } from "@postern/queue";
import type { Logger } from "@postern/telemetry";
import { Worker } from "bullmq";
import type { Resolve } from "./address-policy";
import {
  type AttemptRecord,
  type ClaimedDelivery,
  claimDeliveries,
  type DisabledEndpoint,
  dispatchRound,
  endpointsWithDueDeliveries,
  nextDueAt,
  pruneWebhookDeliveries,
  recordAttempts,
} from "./delivery-store";
import { webhookBody } from "./events";
import { createWebhookWaker, type WebhookJob, webhookQueueName } from "./queue";
import { createWebhookSender } from "./sender";

/**
 * The webhook side of the worker role (docs/webhooks.md):
 *
 * - the dispatcher reads the events outbox past each project's cursor and turns each event into a
 *   delivery per subscribed endpoint, in the transaction that moves the cursor, then wakes those
 *   endpoints (a BullMQ job each);
 * - a BullMQ worker serves endpoints: a job claims its endpoint's due deliveries (at most
 *   `endpointConcurrency` in flight, every worker together), POSTs them, records each attempt and
 *   claims more, until none is due or its budget is spent (then it queues itself behind the
 *   others); it leaves a delayed job for the endpoint's next retry;
 * - a sweeper wakes endpoints whose wake-up was lost (Redis, a dead worker) and prunes finished
 *   deliveries past EVENT_RETENTION_DAYS.
 */

export interface WebhookWorkerDeps {
  config: Pick<
    ResolvedConfig,
    "webhooks" | "encryptionKey" | "redisKeyPrefix" | "eventRetentionDays" | "delivery"
  >;
  sql: SqlPool;
  redis: Redis;
  log: Logger;
  /** Resolver of endpoint hosts (tests); the system's by default. */
  resolve?: Resolve;
  /** Tuning for tests; the defaults suit production. */
  tuning?: Partial<typeof defaultTuning>;
}

const defaultTuning = {
  /** How often an idle dispatcher looks at the outbox. */
  dispatchIntervalMs: 100,
  /** Projects one dispatch round takes, and events of each. */
  projectsPerRound: 200,
  eventsPerProject: 500,
  /** Endpoints served at once by one worker. */
  endpointsInFlight: 100,
  /** A job hands its endpoint back to the queue after this many deliveries or this long. */
  deliveriesPerJob: 1000,
  jobBudgetMs: 30_000,
};

export interface RunningWebhookWorker {
  stop(): Promise<void>;
}

export function startWebhookWorker(deps: WebhookWorkerDeps): RunningWebhookWorker {
  const { config, sql, redis } = deps;
  const log = deps.log.child({ component: "webhooks" });
  const tuning = { ...defaultTuning, ...deps.tuning };
  const settings = config.webhooks;
  const prefix = config.redisKeyPrefix;
  const waker = createWebhookWaker(redis, prefix);
  const sender = createWebhookSender({
    allowPrivate: settings.allowPrivate,
    timeoutMs: settings.timeoutMs,
    resolve: deps.resolve,
  });
  // A claim outlives the longest attempt and its record, so a live worker never loses one.
  const leaseMs = settings.timeoutMs * 2 + 10_000;
  const recorder = createGroupCommit<AttemptRecord, DisabledEndpoint[]>(
    async (records) => {
      const disabled = await recordAttempts(sql, records, { disableAfterMs: settings.disableAfterMs });
      for (const endpoint of disabled)
        log.warn(
          { webhookId: endpoint.id, projectId: endpoint.projectId },
          "webhook endpoint disabled: failing",
        );
      return records.map(() => disabled);
    },
    { maxItems: 500, maxInFlight: 2 },
  );
  const secrets = new Map<string, string>();
  const secretOf = (sealed: string) => {
    let secret = secrets.get(sealed);
    if (secret === undefined) {
      secret = openSecret(sealed, config.encryptionKey);
      if (secrets.size > 10_000) secrets.clear();
      secrets.set(sealed, secret);
    }
    return secret;
  };

  const attempt = async (
    endpointId: string,
    endpoint: { url: string; secret: string },
    delivery: ClaimedDelivery,
  ) => {
    const outcome = await sender.send({
      url: endpoint.url,
      secret: endpoint.secret,
      webhookId: delivery.payload.id,
      body: webhookBody(delivery.payload),
    });
    const schedule = settings.retryScheduleSeconds;
    const status = outcome.ok ? "succeeded" : delivery.retryStep < schedule.length ? "pending" : "failed";
    const nextAttemptAt =
      status === "pending" ? new Date(Date.now() + retryDelayMs(delivery.retryStep + 1, schedule)) : null;
    log.info(
      {
        webhookId: endpointId,
        deliveryId: delivery.id,
        eventType: delivery.payload.type,
        statusCode: outcome.statusCode,
        durationMs: outcome.durationMs,
        error: outcome.error ?? undefined,
        status,
      },
      outcome.ok ? "webhook delivered" : "webhook attempt failed",
    );
    await recorder.submit({
      deliveryId: delivery.id,
      endpointId,
      status,
      nextAttemptAt,
      startedAt: outcome.startedAt,
      durationMs: outcome.durationMs,
      statusCode: outcome.statusCode,
      response: outcome.response,
      error: outcome.error,
    });
  };

  let stopping = false;

  /** One job: serves the endpoint's due deliveries (see the module comment). */
  const serve = async (endpointId: string) => {
    const concurrency = settings.endpointConcurrency;
    // Claims are made for several lanes at once (each claim is a transaction), not one per answer.
    const refill = Math.max(1, Math.floor(concurrency / 2));
    const deadline = Date.now() + tuning.jobBudgetMs;
    const inFlight = new Set<Promise<void>>();
    let claimed = 0;
    let active = true;
    for (;;) {
      const withinBudget = !stopping && claimed < tuning.deliveriesPerJob && Date.now() < deadline;
      if (withinBudget && (inFlight.size === 0 || concurrency - inFlight.size >= refill)) {
        const batch = await claimDeliveries(sql, endpointId, { concurrency, leaseMs });
        if (!batch.endpoint) {
          active = false; // disabled or deleted: nothing more to send
          break;
        }
        const endpoint = { url: batch.endpoint.url, secret: secretOf(batch.endpoint.secretSealed) };
        for (const delivery of batch.deliveries) {
          const running: Promise<void> = attempt(endpointId, endpoint, delivery)
            .catch((error: Error) =>
              // Not recorded (PostgreSQL unreachable): the claim lapses and the sweeper wakes it.
              log.warn({ err: error, deliveryId: delivery.id }, "webhook attempt not recorded"),
            )
            .finally(() => inFlight.delete(running));
          inFlight.add(running);
        }
        claimed += batch.deliveries.length;
        // Nothing due, or the endpoint's lanes held by another job (which serves what comes).
        if (inFlight.size === 0) break;
      } else if (inFlight.size === 0) break;
      await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (!active) return;
    const due = await nextDueAt(sql, endpointId);
    if (!due) return;
    if (due.getTime() > Date.now()) await waker.wake([endpointId], due);
    // Its budget spent with deliveries due: behind the endpoints waiting in the queue (stopping:
    // for the next worker).
    else if (stopping || claimed >= tuning.deliveriesPerJob || Date.now() >= deadline)
      await waker.wake([endpointId]);
  };

  const worker = new Worker<WebhookJob>(webhookQueueName, async (job) => serve(job.data.endpointId), {
    connection: redis,
    prefix,
    concurrency: tuning.endpointsInFlight,
    autorun: false,
  });
  worker.on("error", (error) => log.error({ err: error }, "webhook worker error"));
  worker.on("failed", (job, error) =>
    log.warn({ endpointId: job?.data.endpointId, err: error }, "webhook job error"),
  );
  void worker.run();

  let wakeUp: (() => void) | undefined;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  const dispatching = (async () => {
    while (!stopping) {
      try {
        const round = await dispatchRound(sql, {
          maxProjects: tuning.projectsPerRound,
          eventsPerProject: tuning.eventsPerProject,
        });
        // If Redis does not take the wake-ups, the sweeper wakes the endpoints.
        if (round.deliveries.size > 0)
          await waker
            .wake([...round.deliveries.keys()])
            .catch((error: Error) =>
              log.warn({ err: error }, "webhook endpoints not woken; the sweeper will"),
            );
        if (!round.more) await pause(tuning.dispatchIntervalMs);
      } catch (error) {
        log.error({ err: error }, "webhook dispatch failed");
        await pause(1000);
      }
    }
  })();

  const sweepLock = `${prefix}:webhook:sweeper-lock`;
  const sweepIntervalMs = config.delivery.sweepIntervalMs;
  let sweeping: Promise<void> | undefined;
  const sweep = async () => {
    const locked = await redis.set(
      sweepLock,
      String(process.pid),
      "PX",
      Math.max(sweepIntervalMs - 100, 100),
      "NX",
    );
    if (locked !== "OK") return;
    const lost = await endpointsWithDueDeliveries(sql);
    await waker.wake(lost);
    const pruned =
      config.eventRetentionDays > 0
        ? await pruneWebhookDeliveries(sql, new Date(Date.now() - config.eventRetentionDays * 86_400_000))
        : 0;
    if (pruned > 0) log.info({ pruned }, "webhook deliveries past EVENT_RETENTION_DAYS deleted");
  };
  const tick = () => {
    if (sweeping) return;
    sweeping = sweep()
      .catch((error: Error) => log.error({ err: error }, "webhook sweep failed"))
      .finally(() => {
        sweeping = undefined;
      });
  };
  // At start too: endpoints left due by a worker that stopped are served at once.
  tick();
  const sweepTimer = setInterval(tick, sweepIntervalMs);

  return {
    async stop() {
      stopping = true;
      clearInterval(sweepTimer);
      wakeUp?.();
      await dispatching;
      await sweeping;
      // Attempts in flight end within WEBHOOK_TIMEOUT and are recorded.
      await worker.close();
      sender.close();
      await waker.close();
    },
  };
}
