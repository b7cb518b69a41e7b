import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { createCredentialVerifier } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type Database, sqlPoolOf } from "@postern/db";
import { ensureDevCertificate } from "@postern/embedded";
import { RouteBook, SuppressionBook } from "@postern/projects";
import {
  countQueuedMessagesByProject,
  createDeliveryProducer,
  failFastRedis,
  type Redis,
} from "@postern/queue";
import { createProjectQuota } from "@postern/quota";
import { createRulesCache } from "@postern/rules";
import type { Logger, Registry } from "@postern/telemetry";
import { SMTPServer } from "smtp-server";
import { createAcceptor } from "./accept";
import { createAuditBuffer } from "./audit-buffer";
import { createConnectionGate } from "./connection-gate";
import { createDataBudget } from "./data-budget";
import { createInflowControl } from "./inflow";
import { createSmtpMetrics } from "./metrics";
import { adaptSmtpServer, limitSessions, type SessionLimits } from "./protocol";
import { replies } from "./replies";
import { createSessionHandlers } from "./session";

export interface SmtpDeps {
  config: ResolvedConfig;
  db: Database;
  redis: Redis;
  log: Logger;
  metrics: Registry;
}

/** Listen ports other than the configured ones (tests): 0 picks a free port, for SMTPS too. */
export interface SmtpListenOverrides {
  smtpPort?: number;
  smtpsPort?: number;
}

export interface RunningSmtp {
  describe: string[];
  ports: { smtp: number; smtps: number | undefined };
  /** Re-reads the certificate files (SIGHUP does this). */
  reloadCertificate(): Promise<void>;
  /** Stops listening, answers 421 to idle sessions, lets DATA in flight finish within SHUTDOWN_TIMEOUT. */
  stop(): Promise<void>;
}

/** How long a Redis command on the SMTP path may take before the client hears 451 4.3.0. */
const redisCommandTimeoutMs = 2_000;

/**
 * Mozilla's "intermediate" configuration (ssl-config.mozilla.org, version 5.7) without its DHE
 * suites: TLS 1.3, and TLS 1.2 with ECDHE key exchange (forward secrecy) and AEAD ciphers only,
 * for RSA and ECDSA certificates. Every TLS 1.2 client of the last decade has one of these; the
 * CBC-SHA1 and static-RSA suites in Node's default list do not reach this server.
 */
const tlsCiphers = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** What smtp-server reports when a TLS handshake (SMTPS or STARTTLS) does not complete. */
type ListenerError = Error & {
  code?: string;
  remoteAddress?: string;
  meta?: { stage?: string; remoteAddress?: string };
};

export async function startSmtp(deps: SmtpDeps, overrides: SmtpListenOverrides = {}): Promise<RunningSmtp> {
  adaptSmtpServer();
  const { config } = deps;
  const log = deps.log.child({ role: "smtp" });

  // The shared connection retries forever (right for BullMQ workers); the reply path needs an
  // answer: a dead Redis must become 451 4.3.0 in bounded time.
  const redis = await failFastRedis(deps.redis, redisCommandTimeoutMs);
  const subscriber = deps.redis.duplicate();
  redis.on("error", (error) => log.debug({ err: error }, "redis"));
  subscriber.on("error", (error) => log.debug({ err: error }, "redis subscriber"));

  const verifier = createCredentialVerifier({
    db: deps.db,
    redis,
    keyPrefix: config.redisKeyPrefix,
    cacheTtlMs: config.smtp.authCacheTtlMs,
    failuresPerIp: config.smtp.authFailuresPerIp,
    failuresPerKey: config.smtp.authFailuresPerKey,
    onSecretCompared: () => metrics.secretsCompared.inc(),
  });
  await verifier.subscribe(subscriber);
  const rules = createRulesCache({ db: deps.db, keyPrefix: config.redisKeyPrefix });
  await rules.subscribe(subscriber);
  const producer = createDeliveryProducer(redis, config.redisKeyPrefix);
  const audit = createAuditBuffer(deps.db, log);
  const dataBudget = createDataBudget(config.smtp.dataMemoryBytes, {
    onWait: () => metrics.dataMemoryWaits.inc(),
  });
  const metrics = createSmtpMetrics(deps.metrics, { dataMemoryHeld: dataBudget.held });
  // Polled on the reply-path connection: with Redis gone a poll fails within its command
  // timeout and in-flow control stops holding, instead of waiting on a connection that retries.
  const inflow = createInflowControl({
    backlog: config.smtp.inflowBacklog,
    maxHoldMs: config.smtp.inflowDelayMs,
    queuedMessages: () => countQueuedMessagesByProject(redis, config.redisKeyPrefix),
    metrics,
    log,
  });
  const acceptor = createAcceptor({
    sql: sqlPoolOf(deps.db),
    producer,
    log,
    onEnqueueFailed: (count) => metrics.enqueueFailures.inc(count),
  });
  const quota = createProjectQuota(redis, config.redisKeyPrefix);
  const { handlers, inData } = createSessionHandlers({
    config,
    log,
    verifier,
    quota,
    acceptor,
    audit,
    metrics,
    inflow,
    dataBudget,
    rules,
    routes: new RouteBook(deps.db),
    suppressions: new SuppressionBook(deps.db),
  });

  const certificateFiles =
    config.smtp.tlsCertFile && config.smtp.tlsKeyFile
      ? { certFile: config.smtp.tlsCertFile, keyFile: config.smtp.tlsKeyFile }
      : await ensureDevCertificate(config.dataDir, config.smtp.hostname);
  const readCertificate = async () => {
    const [cert, key] = await Promise.all([
      readFile(certificateFiles.certFile),
      readFile(certificateFiles.keyFile),
    ]);
    return { cert, key };
  };
  const certificate = await readCertificate();

  const gate = createConnectionGate({
    maxConnections: config.smtp.maxConnections,
    maxConnectionsPerIp: config.smtp.maxConnectionsPerIp,
    handshakeTimeoutMs: config.smtp.tlsHandshakeTimeoutMs,
    metrics,
    log,
  });
  const sessionLimits: SessionLimits = {
    tlsHandshakeTimeoutMs: config.smtp.tlsHandshakeTimeoutMs,
    authDeadlineMs: config.smtp.authDeadlineMs,
    dataDeadlineMs: config.smtp.dataDeadlineMs,
    hardErrorLimit: config.smtp.hardErrorLimit,
    onCut(session, reason) {
      metrics.sessionsCut.inc({ reason });
      log[reason === "handshake_timeout" ? "debug" : "info"](
        { session: session.id, ip: session.remoteAddress, reason },
        "session ended by a limit",
      );
    },
  };

  const listener = (secure: boolean) =>
    new SMTPServer({
      ...handlers,
      secure,
      name: config.smtp.hostname,
      banner: "Postern",
      ...certificate,
      minVersion: "TLSv1.2",
      ciphers: tlsCiphers,
      // Mozilla's choice for this list: every suite is strong, so the client's order wins (a
      // phone without AES instructions picks ChaCha20).
      honorCipherOrder: false,
      authMethods: ["PLAIN", "LOGIN"],
      allowInsecureAuth: false,
      authRequiredMessage: replies.authRequired.text,
      size: config.smtp.maxMessageSize,
      rejectOversized: true,
      hideENHANCEDSTATUSCODES: false,
      // RFC 6531: non-ASCII addresses with the MAIL parameter (docs/smtp.md, SMTPUTF8).
      hideSMTPUTF8: false,
      useProxy: config.smtp.proxyProtocol,
      socketTimeout: config.smtp.idleTimeoutMs,
      closeTimeout: config.shutdownTimeoutMs,
      // A submission service identifies clients by credential, not by PTR record; a lookup
      // would cost up to 1.5 s per connection.
      disableReverseLookup: true,
      logger: false,
    });

  const servers: { server: SMTPServer; secure: boolean }[] = [];
  const listen = async (server: SMTPServer, port: number) => {
    server.on("error", (error: ListenerError) => {
      // A handshake that fails is the client's doing (a scanner, an outdated client, a dropped
      // connection): at debug and without a stack, so that a stream of them cannot flood the log.
      if (error.meta?.stage === "connect")
        return log.debug(
          { ip: error.meta.remoteAddress ?? error.remoteAddress, code: error.code, reason: error.message },
          "TLS handshake failed",
        );
      log.warn({ err: error }, "smtp listener error");
    });
    await new Promise<void>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(port, config.smtp.host, () => {
        server.server.off("error", reject);
        resolve();
      });
    });
    return (server.server.address() as AddressInfo).port;
  };

  const starttls = listener(false);
  gate.guard(starttls, false);
  limitSessions(starttls, sessionLimits);
  const smtpPort = await listen(starttls, overrides.smtpPort ?? config.smtp.port);
  servers.push({ server: starttls, secure: false });
  let smtpsPort: number | undefined;
  const configuredSmtps =
    overrides.smtpsPort ?? (config.smtp.smtpsPort === 0 ? undefined : config.smtp.smtpsPort);
  if (configuredSmtps !== undefined) {
    const implicit = listener(true);
    gate.guard(implicit, true);
    limitSessions(implicit, sessionLimits);
    smtpsPort = await listen(implicit, configuredSmtps);
    servers.push({ server: implicit, secure: true });
  }

  const reloadCertificate = async () => {
    const next = await readCertificate();
    for (const { server } of servers) server.updateSecureContext(next);
    log.info({ certFile: certificateFiles.certFile }, "TLS certificate reloaded");
  };
  const onHangup = () => {
    reloadCertificate().catch((error: Error) =>
      log.error({ err: error }, "TLS certificate reload failed; the previous one stays in use"),
    );
  };
  process.on("SIGHUP", onHangup);

  const host = config.smtp.host;
  return {
    describe: [
      `SMTP     ${host}:${smtpPort}  (STARTTLS, AUTH after TLS)`,
      ...(smtpsPort !== undefined ? [`SMTPS    ${host}:${smtpsPort}  (implicit TLS)`] : []),
    ],
    ports: { smtp: smtpPort, smtps: smtpsPort },
    reloadCertificate,
    async stop() {
      process.off("SIGHUP", onHangup);
      const closed = servers.map(
        ({ server }) => new Promise<void>((resolve) => server.close(() => resolve())),
      );
      // Idle sessions hear 421 now; a session inside DATA finishes its message first (and then
      // hears 421 at its next command, which smtp-server answers while closing).
      for (const { server } of servers) {
        for (const connection of server.connections) {
          if (!inData.has(connection.session.id)) connection.send(421, replies.shuttingDown.text);
        }
      }
      // A held transaction is idle: it heard 421 above and its connection is closing.
      inflow.close();
      await Promise.race([
        Promise.all(closed),
        new Promise((resolve) => setTimeout(resolve, config.shutdownTimeoutMs + 1_000).unref()),
      ]);
      await audit.flush();
      // Recipients counted ahead for busy projects and not used: another process may use them.
      await quota.close();
      // Jobs of the last messages accepted, so that they need not wait for a sweep.
      await acceptor.settled();
      await producer.close().catch(() => {});
      subscriber.disconnect();
      redis.disconnect();
    },
  };
}
