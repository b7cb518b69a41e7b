import { listenForAuthInvalidations, publishAuthInvalidation } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type Database, sqlPoolOf } from "@postern/db";
import { createDkimSigner } from "@postern/dkim";
import { createDeliveryStore } from "@postern/messages";
import { RouteBook } from "@postern/projects";
import {
  countQueuedMessages,
  createBacklogLedger,
  createDeliveryProducer,
  createDeliveryQueue,
  createDeliveryWorker,
  type DeliveryJobResult,
  type Redis,
} from "@postern/queue";
import { DestinationThrottle, MtaStsPolicies, MxResolver, UpstreamTransports } from "@postern/relay";
import { summariseHeaders } from "@postern/smtp";
import type { Logger, Registry } from "@postern/telemetry";
import { createReturnPaths } from "@postern/verp";
import { startWebhookWorker } from "@postern/webhooks";
import { deliverMessage, SourceAddressRotation } from "./deliver";
import { registerDeliveryMetrics } from "./metrics";
import { startSweeper } from "./sweeper";

export interface WorkerDeps {
  config: ResolvedConfig;
  db: Database;
  redis: Redis;
  log: Logger;
  metrics: Registry;
  /**
   * Certificate authorities trusted for verified TLS towards MX hosts and upstreams instead of
   * Node's store: tests' own CA (an operator adds one with NODE_EXTRA_CA_CERTS).
   */
  trustedCa?: string[];
}

export interface RunningWorker {
  describe: string[];
  /** Stops taking jobs, lets in-flight deliveries finish within SHUTDOWN_TIMEOUT, closes pools. */
  stop(): Promise<void>;
}

/** The delivery role: BullMQ worker, per-project upstream pools, sweeper, metrics, and the webhooks. */
export async function startWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const { config, db, redis } = deps;
  const log = deps.log.child({ component: "worker" });
  const prefix = config.redisKeyPrefix;
  const transports = new UpstreamTransports({
    maxConnections: config.delivery.projectConcurrency,
    maxUpstreamConnections: config.delivery.upstreamConcurrency,
    connectTimeoutMs: config.delivery.connectTimeoutMs,
    greetingTimeoutMs: config.delivery.greetingTimeoutMs,
    ehloName: config.smtp.hostname,
    trustedCa: deps.trustedCa,
    circuit: {
      failureThreshold: config.delivery.circuitFailures,
      cooldownMs: config.delivery.circuitCooldownMs,
    },
  });
  const queue = createDeliveryQueue(redis, prefix);
  const producer = createDeliveryProducer(redis, prefix);
  const sql = sqlPoolOf(db);
  // A destination without a cap of its own is halved from, and recovers up to, the connections a
  // worker may have to one upstream.
  const throttle = new DestinationThrottle(redis, prefix, { ceiling: config.delivery.upstreamConcurrency });
  const metrics = registerDeliveryMetrics(deps.metrics, {
    queue,
    sql,
    transports,
    throttle,
    queuedMessages: () => countQueuedMessages(redis, prefix),
  });
  // Two short statements per delivery, never held across the upstream exchange, and grouped
  // across the deliveries in flight: one load and one record statement at a time serve them all.
  const store = createDeliveryStore(sql);
  const routes = new RouteBook(db);
  const direct = {
    mx: new MxResolver({
      servers: config.dnsServers,
      onLookup: (outcome) => metrics.mxLookups.inc({ outcome }),
    }),
    port: config.delivery.directSmtpPort,
    mtaSts: new MtaStsPolicies({ servers: config.dnsServers }),
    sourceAddresses: new SourceAddressRotation(),
  };
  // A project's DKIM keys, remembered for a minute; a change made through Postern (verify, rotate,
  // delete) drops them at once on every node through the invalidation channel.
  const signer = createDkimSigner({
    db,
    encryptionKey: config.encryptionKey,
    cacheTtlMs: 60_000,
    readFrom: summariseHeaders,
  });
  const invalidations = redis.duplicate();
  invalidations.on("error", (error) => log.debug({ err: error }, "redis invalidation subscriber"));
  void listenForAuthInvalidations(invalidations, prefix, signer).catch((error: Error) =>
    log.warn({ err: error }, "cannot hear key changes; DKIM keys are read again after a minute"),
  );
  // The record statement added these recipients to the suppressions and bumped the project's
  // version: every node's cached policy of the project goes, so RCPT sees the new version.
  const onSuppressed = (projectId: string, addresses: string[]) => {
    log.info({ projectId, addresses }, "recipients failed 5.1.x: on the project's suppressions");
    publishAuthInvalidation(redis, prefix, { kind: "project", projectId }).catch((error: Error) =>
      log.warn(
        { err: error },
        "suppression not announced; SMTP nodes see it when their policy cache expires",
      ),
    );
  };
  // VERP return paths, for the projects that ask for them, once BOUNCE_DOMAIN is set.
  const returnPaths = config.bounces.domain
    ? createReturnPaths({ encryptionKey: config.encryptionKey, bounceDomain: config.bounces.domain })
    : undefined;
  const backlog = createBacklogLedger(redis, prefix, {
    onError: (error) => log.warn({ err: error }, "backlog counts not updated; the next sweep resets them"),
  });

  const worker = createDeliveryWorker(
    redis,
    prefix,
    async ({ messageId, projectId }): Promise<DeliveryJobResult> => {
      const run = await deliverMessage(
        { config, store, transports, throttle, routes, direct, signer, onSuppressed, returnPaths },
        messageId,
        projectId,
      );
      switch (run.kind) {
        case "skipped":
        case "superseded":
          log.debug({ messageId, run }, "nothing to deliver");
          return { kind: "done" };
        case "given_back":
          metrics.givenBack.inc({ reason: run.reason });
          log.debug({ messageId, run }, "no connection free; the job goes back to the queue");
          return { kind: "retry", delayMs: run.retryInMs };
        case "delivered":
          metrics.attempts.inc({ outcome: "delivered" });
          metrics.latency.observe((Date.now() - run.acceptedAt.getTime()) / 1000);
          log.info({ messageId, projectId: run.projectId }, "delivered");
          return { kind: "done" };
        case "deferred":
          metrics.attempts.inc({ outcome: "deferred" });
          log.info({ messageId, projectId: run.projectId, retryInMs: run.retryInMs }, "deferred");
          return { kind: "retry", delayMs: run.retryInMs };
        case "failed":
          metrics.attempts.inc({ outcome: "failed" });
          log.info({ messageId, projectId: run.projectId, reason: run.reason }, "failed");
          return { kind: "failed", reason: run.reason };
      }
    },
    {
      concurrency: config.delivery.concurrency,
      stalledTimeoutMs: config.delivery.stalledTimeoutMs,
      retries: producer,
      backlog,
      onBatchMessageError: (messageId, error) =>
        log.warn({ messageId, err: error }, "delivery error; the message is retried in a job of its own"),
    },
  );
  worker.on("error", (error) => log.error({ err: error }, "delivery worker error"));
  worker.on("failed", (job, error) => {
    if (error.name !== "UnrecoverableError") log.warn({ jobId: job?.id, err: error }, "delivery job error");
  });
  void worker.run();

  const sweeper = startSweeper(
    { config, sql, redis, queue, producer },
    (result) => {
      const { expiredHolds, ...counts } = result;
      if (expiredHolds.approved + expiredHolds.denied > 0 || Object.values(counts).some((count) => count > 0))
        log.info(result, "sweep");
    },
    (error) => log.error({ err: error }, "sweep failed"),
  );

  // Events of the outbox to the projects' webhook endpoints (packages/webhooks).
  const webhooks = startWebhookWorker({ config, sql, redis, log: deps.log, metrics: deps.metrics });

  return {
    describe: [
      `worker   ${config.delivery.concurrency} deliveries in flight, ${config.delivery.projectConcurrency} per project, ${config.delivery.upstreamConcurrency} per upstream`,
    ],
    async stop() {
      await sweeper.stop();
      const closing = worker.close();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        closing.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), config.shutdownTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        // Deliveries still running are abandoned; their jobs stay locked until the lock expires,
        // then another worker takes them up (at most one more send, see docs/delivery.md).
        log.warn("deliveries still in flight at the shutdown timeout; leaving them to another worker");
        await worker.close(true);
      }
      // Webhook attempts in flight end within WEBHOOK_TIMEOUT and are recorded.
      await webhooks.stop();
      transports.close();
      throttle.close();
      invalidations.disconnect();
      await backlog.close();
      await producer.close();
      await queue.close();
    },
  };
}
