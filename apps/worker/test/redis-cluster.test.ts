import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { publishAuthInvalidation } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { freePort } from "@postern/embedded";
import { createRedis, deliveryQueueName, keyFamily, type Redis } from "@postern/queue";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  type CapturedLog,
  captureLog,
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type ProjectFixture,
  type RunningRedisCluster,
  SmtpSink,
  startRedisCluster,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import { Redis as RedisNode } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "../../smtp/test/smtp-client";
import { until, waitForStatus } from "./wait";

/**
 * The SMTP front door and the delivery worker on a real three-node Redis Cluster (REDIS_CLUSTER),
 * with the test run's PostgreSQL: every Redis use of the mail path (credential cache invalidation
 * over pub/sub, quota limiter, in-flow backlog, BullMQ queue, fairness and throttle scripts,
 * sweeper) must work with keys spread over nodes, each script's keys in one slot.
 */

let dir: string;
let cluster: RunningRedisCluster;
let ctx: TestContext;
let redis: Redis;
let config: ResolvedConfig;
let smtp: RunningSmtp;
let worker: RunningWorker;
let metrics: Registry;
let sink: SmtpSink;
let fixture: ProjectFixture;
let captured: CapturedLog;
const quotaPerMinute = 3;
const bin = fileURLToPath(new URL("../../cli/bin/postern.js", import.meta.url));

/** The port of the master that holds `key`'s slot. */
async function nodeOf(key: string): Promise<number> {
  const slot = Number(await redis.cluster("KEYSLOT", key));
  const ranges = await redis.cluster("SLOTS");
  const port = ranges.find(([from, to]) => slot >= from && slot <= to)?.[2]?.[1];
  if (port === undefined) throw new Error(`no node holds slot ${slot}`);
  return port;
}

/** The quota limiter's key of a project (rate-limiter-flexible: `keyPrefix:key`). */
const quotaKey = (prefix: string, projectId: string) => `${prefix}:quota:perMinute:${projectId}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "postern-cluster-"));
  cluster = await startRedisCluster(dir);
  // Destination caps, so that every delivery runs the throttle's scripts.
  ctx = await createTestContext({
    DESTINATION_CONCURRENCY: "4",
    DESTINATION_RATE_PER_MINUTE: "1000",
    DELIVERY_SWEEP_INTERVAL: "1",
  });
  redis = createRedis(cluster.url, { cluster: true });
  sink = await SmtpSink.start();
  fixture = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url, quotaPerMinute });
  // A key prefix whose families land on three different nodes, so that the test shows keys
  // spread over the cluster whatever the random project id and prefix of the run.
  let prefix = ctx.redisKeyPrefix;
  for (let i = 0; ; i++) {
    prefix = `${ctx.redisKeyPrefix}-${i}`;
    const nodes = new Set([
      await nodeOf(keyFamily(redis, prefix, deliveryQueueName)),
      await nodeOf(keyFamily(redis, prefix, "throttle")),
      await nodeOf(quotaKey(prefix, fixture.project.id)),
    ]);
    if (nodes.size === 3) break;
  }
  config = {
    ...ctx.config,
    redisUrl: cluster.url,
    redisCluster: true,
    redisKeyPrefix: prefix,
    // Long enough that only the pub/sub invalidation can end a cached verification in this test.
    smtp: { ...ctx.config.smtp, authCacheTtlMs: 600_000 },
  };
  metrics = createMetricsRegistry();
  captured = captureLog("debug");
  const deps = { config, db: ctx.db, redis, log: captured.log, metrics };
  smtp = await startSmtp(deps, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker(deps);
}, 120_000);

afterAll(async () => {
  await smtp?.stop();
  await worker?.stop();
  redis?.disconnect();
  await sink?.stop();
  await ctx?.close();
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** One transaction on an open session; the message id of its `250 2.0.0 queued as <id>`. */
async function send(client: RawSmtp, to: string): Promise<string> {
  expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
  expect((await client.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  const done = await client.command(
    `From: <app@example.com>\r\nTo: <${to}>\r\nSubject: cluster\r\n\r\nHello.\r\n.`,
  );
  expect(done.code).toBe(250);
  const id = done.text.match(/queued as ([0-9a-f-]{36})/)?.[1];
  if (!id) throw new Error(`no message id in "${done.text}"`);
  return id;
}

/** Every key under `prefix` on each node, by node port. */
async function keysByNode(prefix: string): Promise<Map<number, string[]>> {
  const byNode = new Map<number, string[]>();
  for (const { port, url } of cluster.nodes) {
    const node = new RedisNode(url);
    try {
      byNode.set(port, await node.keys(`*${prefix}*`));
    } finally {
      node.disconnect();
    }
  }
  return byNode;
}

describe("Postern on a Redis Cluster", () => {
  it("accepts over SMTP, holds the quota with 451 4.7.1, and delivers to the upstream", async () => {
    const { client, auth } = await RawSmtp.session(smtp.ports.smtp, fixture.smtp);
    expect(auth?.code).toBe(235);
    const ids: string[] = [];
    for (let i = 0; i < quotaPerMinute; i++) ids.push(await send(client, `r${i}@example.org`));
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    const over = await client.command("RCPT TO:<over@example.org>");
    expect([over.code, over.enhanced]).toEqual([451, "4.7.1"]);
    client.close();

    await sink.waitFor(quotaPerMinute);
    for (const id of ids) await waitForStatus(ctx.db, id, "delivered");
    expect(sink.messages.map((m) => m.rcptTo).sort()).toEqual(
      Array.from({ length: quotaPerMinute }, (_, i) => [`r${i}@example.org`]),
    );
  });

  it("re-queues from PostgreSQL a message whose job is missing (the sweeper on the cluster)", async () => {
    const message = await createQueuedMessageFixture(ctx.db, fixture.project, { to: ["swept@example.org"] });
    await waitForStatus(ctx.db, message.id, "delivered", 30_000);
    expect(sink.messages.some((m) => m.rcptTo.includes("swept@example.org"))).toBe(true);
  }, 60_000);

  it("ends a cached verification at once on a revocation published on the cluster", async () => {
    const other = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const first = await RawSmtp.session(smtp.ports.smtp, other.smtp);
    expect(first.auth?.code).toBe(235);
    first.client.close();
    await ctx.db.smtpCredential.update({
      where: { id: other.smtp.credentialId },
      data: { revokedAt: new Date() },
    });
    await publishAuthInvalidation(redis, config.redisKeyPrefix, {
      kind: "credential",
      credentialId: other.smtp.credentialId,
    });
    // Cached for 10 minutes: only the invalidation, received over the cluster, refuses it.
    await until(async () => {
      const { client, auth } = await RawSmtp.session(smtp.ports.smtp, other.smtp);
      client.close();
      return auth?.code === 535;
    }, "the revoked credential to be refused");
  });

  it("spreads the key families over the nodes, each family's keys on one node, nothing CROSSSLOT", async () => {
    const prefix = config.redisKeyPrefix;
    const byNode = await keysByNode(prefix);
    const holders = (match: (key: string) => boolean) =>
      [...byNode].filter(([, keys]) => keys.some(match)).map(([port]) => port);
    const queueKeys = (key: string) => key.startsWith(`{${prefix}:${deliveryQueueName}}:`);
    const throttleKeys = (key: string) => key.startsWith(`{${prefix}:throttle}:`);
    const quotaKeys = (key: string) => key.startsWith(`${prefix}:quota:`);
    const queueNode = await nodeOf(keyFamily(redis, prefix, deliveryQueueName));
    const throttleNode = await nodeOf(keyFamily(redis, prefix, "throttle"));
    expect(holders(queueKeys)).toEqual([queueNode]);
    // The deliveries' starts of the last minute (`DESTINATION_RATE_PER_MINUTE`).
    expect(holders(throttleKeys)).toEqual([throttleNode]);
    expect(holders(quotaKeys)).toContain(await nodeOf(quotaKey(prefix, fixture.project.id)));
    expect(new Set([...holders(queueKeys), ...holders(throttleKeys), ...holders(quotaKeys)]).size).toBe(3);
    expect(captured.text()).not.toMatch(
      /CROSSSLOT|sweep failed|delivery worker error|delivery job error|webhook worker error/,
    );
    const enqueueFailures = await metrics.getSingleMetric("postern_smtp_enqueue_failures_total")?.get();
    expect(enqueueFailures?.values[0]?.value ?? 0).toBe(0);
  });

  it("runs `postern start` (API, worker, SMTP) from REDIS_URL and REDIS_CLUSTER=true", async () => {
    const ports = { http: await freePort(), smtp: await freePort(), smtps: await freePort() };
    const env = {
      ...ctx.env,
      REDIS_URL: cluster.url,
      REDIS_CLUSTER: "true",
      // The installation's prefix: this process shares the cluster's state with the roles above.
      REDIS_KEY_PREFIX: config.redisKeyPrefix,
      LOG_LEVEL: "warn",
      HTTP_PORT: String(ports.http),
      SMTP_PORT: String(ports.smtp),
      SMTPS_PORT: String(ports.smtps),
    };
    const child = spawn(process.execPath, [bin, "start"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const admin = { authorization: `Bearer ${ctx.env.ADMIN_TOKEN}` };
      const get = (path: string, headers = {}) =>
        fetch(`http://127.0.0.1:${ports.http}${path}`, { headers }).catch(() => undefined);
      await until(async () => (await get("/health/ready"))?.status === 200, `readiness of ${output}`, 60_000);
      const { client, auth } = await RawSmtp.session(ports.smtp, fixture.smtp);
      expect(auth?.code).toBe(235);
      // The first test used the project's quota for the minute, counted on the cluster.
      expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
      const rcpt = await client.command("RCPT TO:<start@example.org>");
      expect([rcpt.code, rcpt.enhanced]).toEqual([451, "4.7.1"]);
      client.close();
      const other = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
      const session = await RawSmtp.session(ports.smtp, other.smtp);
      const id = await send(session.client, "start@example.org");
      session.client.close();
      await waitForStatus(ctx.db, id, "delivered", 30_000);
      const system = (await (await get("/admin/system", admin))?.json()) as {
        checks: Record<string, string>;
        queue: { workers: number } | null;
      };
      expect(system.checks.redis).toBe("ok");
      expect(system.queue?.workers).toBeGreaterThanOrEqual(1);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    expect(output).toContain("Redis      a cluster, from REDIS_URL");
    expect(output).not.toMatch(/CROSSSLOT/);
  }, 120_000);

  // Last: it stops the cluster.
  it("answers RCPT with 451 4.3.0 when the cluster is gone, instead of waiting for it", async () => {
    await worker.stop();
    const other = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const { client, auth } = await RawSmtp.session(smtp.ports.smtp, other.smtp);
    expect(auth?.code).toBe(235);
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    await cluster.stop();
    const rcpt = await client.command("RCPT TO:<a@example.org>");
    expect([rcpt.code, rcpt.enhanced]).toEqual([451, "4.3.0"]);
    client.close();
  });
});
