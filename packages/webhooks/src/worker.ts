import { randomUUID } from "node:crypto";
import { openSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import type { SqlPool } from "@postern/db";
import { createGroupCommit } from "@postern/messages";
import { keyFamily, queuePrefix, type Redis, retryDelayMs } from "@postern/queue";
import type { Logger, Registry } from "@postern/telemetry";
import { Worker } from "bullmq";
import { Counter, Histogram } from "prom-client";
import {
  type AttemptRecord,
  type DisabledEndpoint,
  type DueDelivery,
  dispatchRound,
  dueDeliveries,
  endpointsWithDueDeliveries,
  nextDueAt,
  pruneWebhookDeliveries,
  recordAttempts,
} from "./delivery-store";
import { webhookBody } from "./events";
import { createServingLeases, createWebhookWaker, type WebhookJob, webhookQueueName } from "./queue";
import { createWebhookSender } from "./sender";

/**
 * The webhook side of the worker role (docs/webhooks.md):
 *
 * - the dispatcher reads the events outbox past each project's cursor and turns each event into a
 *   delivery per subscribed endpoint, in the transaction that moves the cursor, then wakes those
 *   endpoints (a BullMQ job each);
 * - a BullMQ worker serves endpoints: a job takes its endpoint's serving lease (one job at a time
 *   per endpoint, every worker together; queue.ts), reads its due deliveries, POSTs them with at
 *   most `endpointConcurrency` in flight, records each attempt and reads more, until none is due
 *   or its budget is spent (then it queues itself behind the others); it leaves a delayed job for
 *   the endpoint's next retry;
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
  /** The process registry: webhook attempts by outcome and their durations. */
  metrics?: Registry;
}

const tuning = {
  /** How often an idle dispatcher looks at the outbox. */
  dispatchIntervalMs: 100,
  /** Projects one dispatch round takes, and events of each. */
  projectsPerRound: 200,
  eventsPerProject: 500,
  /** Endpoints served at once by one worker. */
  endpointsInFlight: 100,
  /** Due deliveries one read of an endpoint's takes. */
  readAhead: 100,
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
  const settings = config.webhooks;
  const prefix = config.redisKeyPrefix;
  const waker = createWebhookWaker(redis, prefix);
  const sender = createWebhookSender({
    allowPrivate: settings.allowPrivate,
    timeoutMs: settings.timeoutMs,
  });
  // A serving lease outlives the longest attempt and its record; the holder renews it at a third.
  const leaseMs = settings.timeoutMs * 2 + 10_000;
  const leases = createServingLeases(redis, prefix, leaseMs);
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
    // A statement at most every 10 ms: an endpoint's answers arrive one by one, and each statement
    // is a commit; the lanes do not wait for it.
    { maxItems: 500, maxInFlight: 1, spacingMs: 10 },
  );
  const registers = deps.metrics ? [deps.metrics] : [];
  const attempts = new Counter({
    name: "postern_webhook_attempts_total",
    help: "Webhook POSTs by outcome: succeeded (2xx), retry (failed, retried later), failed (the last retry failed)",
    labelNames: ["outcome"],
    registers,
  });
  const attemptDuration = new Histogram({
    name: "postern_webhook_attempt_duration_seconds",
    help: "Time from the start of a webhook POST to its answer (or failure)",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
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

  /** One POST and its record; `answered` is called between the two. */
  const attempt = async (
    endpointId: string,
    endpoint: { url: string; secret: string },
    delivery: DueDelivery,
    answered: () => void,
  ) => {
    const outcome = await sender.send({
      url: endpoint.url,
      secret: endpoint.secret,
      webhookId: delivery.payload.id,
      body: webhookBody(delivery.payload),
    });
    answered();
    const schedule = settings.retryScheduleSeconds;
    const status = outcome.ok ? "succeeded" : delivery.retryStep < schedule.length ? "pending" : "failed";
    const nextAttemptAt =
      status === "pending" ? new Date(Date.now() + retryDelayMs(delivery.retryStep + 1, schedule)) : null;
    attempts.inc({
      outcome: status === "succeeded" ? "succeeded" : status === "pending" ? "retry" : "failed",
    });
    attemptDuration.observe(outcome.durationMs / 1000);
    // The delivery log in PostgreSQL has every attempt; the process log has the failures (a
    // success a line at debug level: at info, two events a message would double the log).
    log[outcome.ok ? "debug" : "info"](
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
    const token = randomUUID();
    // Another job serves the endpoint: it reads what this job was woken for before it ends.
    if (!(await leases.acquire(endpointId, token))) return;
    const renewal = setInterval(
      () =>
        leases
          .renew(endpointId, token)
          .catch((error: Error) => log.warn({ err: error, endpointId }, "webhook serving lease not renewed")),
      leaseMs / 3,
    );
    let active: boolean;
    try {
      active = await sendDue(endpointId);
    } finally {
      clearInterval(renewal);
      await leases.release(endpointId, token).catch(() => {});
    }
    if (!active) return;
    // After the release: a job woken while this one held the lease ended at once, and what it was
    // woken for is due now; this read sees it.
    const due = await nextDueAt(sql, endpointId);
    if (!due) return;
    if (due.getTime() > Date.now()) await waker.wake([endpointId], due);
    // Due now: deliveries that came as the lease was released, or a budget spent (behind the
    // endpoints waiting in the queue), or a worker stopping (for the next one).
    else await waker.wake([endpointId]);
  };

  /**
   * Sends the endpoint's due deliveries, `endpointConcurrency` at a time, until none is due or the
   * job's budget is spent; false when the endpoint is not active.
   */
  const sendDue = async (endpointId: string) => {
    const concurrency = settings.endpointConcurrency;
    const deadline = Date.now() + tuning.jobBudgetMs;
    // Read ahead, a statement per `readAhead` deliveries rather than one per free lane: only this
    // job sends the endpoint's deliveries while it holds the lease.
    const waiting: DueDelivery[] = [];
    // A lane is a request in flight; a delivery stays out of the reads until its attempt is
    // recorded, but its lane is free as soon as it is answered (the record is group-committed).
    const lanes = new Map<string, Promise<void>>();
    const unrecorded = new Map<string, Promise<void>>();
    let endpoint: { url: string; secret: string } | undefined;
    let read = 0;
    const withinBudget = () => !stopping && read < tuning.deliveriesPerJob && Date.now() < deadline;
    for (;;) {
      if (stopping) waiting.length = 0; // left due, for the next worker
      if (waiting.length === 0 && withinBudget() && lanes.size <= concurrency / 2) {
        const batch = await dueDeliveries(sql, endpointId, {
          limit: tuning.readAhead,
          sending: [...unrecorded.keys()],
        });
        if (!batch.endpoint) {
          await Promise.all(unrecorded.values());
          return false; // disabled or deleted
        }
        endpoint = { url: batch.endpoint.url, secret: secretOf(batch.endpoint.secretSealed) };
        waiting.push(...batch.deliveries);
        read += batch.deliveries.length;
      }
      while (endpoint && waiting.length > 0 && lanes.size < concurrency) {
        const delivery = waiting.shift() as DueDelivery;
        let answered = () => {};
        lanes.set(
          delivery.id,
          new Promise<void>((resolve) => {
            answered = resolve;
          }),
        );
        const done = attempt(endpointId, endpoint, delivery, () => lanes.delete(delivery.id) && answered())
          .catch((error: Error) =>
            // Not recorded (PostgreSQL unreachable): it stays due, and is sent again.
            log.warn({ err: error, deliveryId: delivery.id }, "webhook attempt not recorded"),
          )
          .finally(() => {
            lanes.delete(delivery.id);
            answered();
            unrecorded.delete(delivery.id);
          });
        unrecorded.set(delivery.id, done);
      }
      // Nothing due, or the budget spent with nothing left to send.
      if (lanes.size === 0 && (waiting.length === 0 || !endpoint)) {
        if (unrecorded.size === 0 || !withinBudget()) break;
        // Answered, not yet recorded: read again once they are, for what came meanwhile.
        await Promise.race(unrecorded.values());
        continue;
      }
      await Promise.race(lanes.values());
    }
    // Recorded before the lease goes: the next holder must not read them as still due.
    await Promise.all(unrecorded.values());
    return true;
  };

  const worker = new Worker<WebhookJob>(webhookQueueName, async (job) => serve(job.data.endpointId), {
    connection: redis,
    prefix: queuePrefix(redis, prefix, webhookQueueName),
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

  const sweepLock = `${keyFamily(redis, prefix, webhookQueueName)}:sweeper-lock`;
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
