import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitForStatus } from "./wait";

let ctx: TestContext;
let producer: DeliveryProducer;
let metrics: Registry;
let worker: Awaited<ReturnType<typeof startWorker>>;
const sinks: SmtpSink[] = [];
/** Everything the worker logs, at debug level, to check that no secret reaches the logs. */
let logged = "";

beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1" });
  metrics = createMetricsRegistry();
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger(
      { level: "debug" },
      {
        write(line: string) {
          logged += line;
        },
      },
    ),
    metrics,
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});
afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  for (const sink of sinks) await sink.stop();
  await ctx?.close();
});

async function sink(options: Parameters<typeof SmtpSink.start>[0] = {}) {
  const started = await SmtpSink.start(options);
  sinks.push(started);
  return started;
}

async function queue(upstream: string, input: Parameters<typeof createQueuedMessageFixture>[2] = {}) {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream });
  const message = await createQueuedMessageFixture(ctx.db, project, input);
  await producer.enqueue(message);
  return { project, message };
}

describe("delivery to the project's upstream", () => {
  it("forwards the stored bytes and envelope unchanged and records the attempt", async () => {
    const upstream = await sink();
    // Dot at line start (dot-stuffing), 8-bit bytes, a long header line: all must arrive as stored.
    const raw = Buffer.concat([
      Buffer.from(
        "Received: from app by postern.test; Sat, 21 Nov 2026 12:00:00 +0000\r\nFrom: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n.leading dot\r\n..two dots\r\n",
      ),
      Buffer.from([0xc3, 0xa9, 0x0d, 0x0a]),
      Buffer.from(`${"x".repeat(900)}\r\n`),
    ]);
    const { project, message } = await queue(upstream.url, {
      from: "a@example.com",
      to: ["b@example.net"],
      raw,
    });
    await upstream.waitFor(1);
    const received = upstream.messages[0];
    expect(received?.mailFrom).toBe("a@example.com");
    expect(received?.rcptTo).toEqual(["b@example.net"]);
    expect(received?.raw.equals(raw)).toBe(true);

    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(1);
    expect(delivered.deliveredAt).not.toBeNull();
    expect(delivered.completedAt).not.toBeNull();
    const attempts = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({
      number: 1,
      outcome: "delivered",
      code: 250,
      enhancedCode: "2.0.0",
      upstreamHost: `127.0.0.1:${upstream.port}`,
    });
    expect(attempts[0]?.recipients).toEqual([
      expect.objectContaining({ address: "b@example.net", outcome: "delivered", code: 250 }),
    ]);
    const recipients = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
    expect(recipients.map((r) => [r.address, r.status, r.code])).toEqual([
      ["b@example.net", "delivered", 250],
    ]);
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: project.id, action: "message.delivered" },
    });
    expect(audit).toHaveLength(1);
    expect(audit[0]?.actor).toBe("system");
    expect(audit[0]?.details).toMatchObject({ messageId: message.id, attempts: 1 });

    const exposition = await metrics.metrics();
    expect(exposition).toMatch(/postern_delivery_attempts_total\{outcome="delivered"\} [1-9]/);
    expect(exposition).toMatch(/postern_delivery_latency_seconds_count [1-9]/);
    expect(exposition).toContain('postern_delivery_queue_jobs{state="waiting"}');
    expect(exposition).toContain("postern_delivery_oldest_pending_seconds");
  });

  it("fails a message the upstream rejects with 5xx after one attempt, with the upstream's reply", async () => {
    const upstream = await sink();
    upstream.rcptReply = () => ({ code: 550, message: "5.1.1 mailbox unavailable" });
    const { project, message } = await queue(upstream.url);
    const failed = await waitForStatus(ctx.db, message.id, "failed");
    expect(failed.attempts).toBe(1);
    expect(failed.lastError).toContain("mailbox unavailable");
    const [attempt] = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempt).toMatchObject({ number: 1, outcome: "failed", code: 550, enhancedCode: "5.1.1" });
    expect(attempt?.response).toContain("mailbox unavailable");
    const [recipient] = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
    expect(recipient).toMatchObject({ status: "failed", code: 550, enhancedCode: "5.1.1" });
    expect(
      await ctx.db.auditEvent.count({ where: { projectId: project.id, action: "message.failed" } }),
    ).toBe(1);
    // Final: no hidden retry, no job left behind (the backoff is 1 s: a retry would have run).
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(1);
    expect(await ctx.redis.exists(`${ctx.redisKeyPrefix}:delivery:${message.id}`)).toBe(0);
  });

  it("defers a 451 and delivers when the upstream recovers, following DELIVERY_BACKOFF", async () => {
    const upstream = await sink();
    let refusals = 0;
    upstream.dataReply = () => (refusals++ < 1 ? { code: 451, message: "4.3.0 try again later" } : undefined);
    const { message } = await queue(upstream.url);
    const deferred = await waitForStatus(ctx.db, message.id, "deferred");
    expect(deferred.lastError).toContain("try again later");
    expect(deferred.nextAttemptAt).not.toBeNull();
    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(2);
    const attempts = await ctx.db.deliveryAttempt.findMany({
      where: { messageId: message.id },
      orderBy: { number: "asc" },
    });
    expect(attempts.map((a) => [a.number, a.outcome, a.code, a.enhancedCode])).toEqual([
      [1, "deferred", 451, "4.3.0"],
      [2, "delivered", 250, "2.0.0"],
    ]);
    // DELIVERY_BACKOFF=1,1 with ±10% jitter: the second attempt starts about 1 s after the first ended.
    const [first, second] = attempts;
    const gap =
      (second?.startedAt.getTime() ?? 0) - ((first?.startedAt.getTime() ?? 0) + (first?.durationMs ?? 0));
    expect(gap).toBeGreaterThanOrEqual(850);
    expect(upstream.messages).toHaveLength(1);
  });

  it("handles each recipient on its own: 250 done, 550 failed, 451 retried without re-sending to the first", async () => {
    const upstream = await sink();
    let softRefusals = 0;
    upstream.rcptReply = (address) => {
      if (address === "bounce@example.net") return { code: 550, message: "5.1.1 no such user" };
      if (address === "later@example.net" && softRefusals++ < 1)
        return { code: 451, message: "4.2.1 greylisted" };
      return undefined;
    };
    const { message } = await queue(upstream.url, {
      to: ["ok@example.net", "bounce@example.net", "later@example.net"],
    });
    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(2);
    expect(upstream.messages.map((m) => m.rcptTo)).toEqual([["ok@example.net"], ["later@example.net"]]);
    const recipients = await ctx.db.messageRecipient.findMany({
      where: { messageId: message.id },
      orderBy: { address: "asc" },
    });
    expect(recipients.map((r) => [r.address, r.status, r.code, r.enhancedCode])).toEqual([
      ["bounce@example.net", "failed", 550, "5.1.1"],
      ["later@example.net", "delivered", 250, "2.0.0"],
      ["ok@example.net", "delivered", 250, "2.0.0"],
    ]);
    const attempts = await ctx.db.deliveryAttempt.findMany({
      where: { messageId: message.id },
      orderBy: { number: "asc" },
    });
    expect(attempts[0]?.outcome).toBe("deferred");
    expect(attempts[0]?.recipients).toEqual([
      expect.objectContaining({ address: "ok@example.net", outcome: "delivered", code: 250 }),
      expect.objectContaining({ address: "bounce@example.net", outcome: "failed", code: 550 }),
      expect.objectContaining({ address: "later@example.net", outcome: "deferred", code: 451 }),
    ]);
    expect(attempts[1]?.recipients).toEqual([
      expect.objectContaining({ address: "later@example.net", outcome: "delivered", code: 250 }),
    ]);
  });

  it("defers while the upstream refuses connections, and delivers once it is back", async () => {
    const upstream = await sink();
    await upstream.down();
    const { message } = await queue(upstream.url);
    const deferred = await waitForStatus(ctx.db, message.id, "deferred");
    const [attempt] = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempt).toMatchObject({ outcome: "deferred", code: null });
    expect(deferred.lastError).toMatch(/ECONNREFUSED|connect/i);
    await upstream.up();
    await waitForStatus(ctx.db, message.id, "delivered");
    expect(upstream.messages).toHaveLength(1);
  });
});

describe("per-project upstream pools", () => {
  it("rebuilds a project's pool when its upstream changes", async () => {
    const before = await sink();
    const after = await sink();
    const { project, message } = await queue(before.url);
    await waitForStatus(ctx.db, message.id, "delivered");
    await ctx.db.project.update({ where: { id: project.id }, data: { upstreamUrl: after.url } });
    const next = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(next);
    await waitForStatus(ctx.db, next.id, "delivered");
    expect(before.messages).toHaveLength(1);
    expect(after.messages).toHaveLength(1);
  });
});

describe("upstream TLS and authentication", () => {
  it("delivers over implicit TLS (smtps://) to a self-signed upstream only with verify=false", async () => {
    const upstream = await sink({ secure: true });
    expect(upstream.url).toMatch(/^smtps:/);
    const refused = await queue(upstream.url);
    const deferred = await waitForStatus(ctx.db, refused.message.id, "deferred");
    expect(deferred.lastError).toMatch(/self[- ]signed certificate/i);
    const attempts = await ctx.db.deliveryAttempt.findMany({ where: { messageId: refused.message.id } });
    expect(attempts[0]).toMatchObject({ outcome: "deferred", code: null });
    expect(attempts[0]?.response).toMatch(/self[- ]signed certificate/i);

    const accepted = await queue(`${upstream.url}?verify=false`);
    await waitForStatus(ctx.db, accepted.message.id, "delivered");
    expect(upstream.messages).toHaveLength(1);
    expect(upstream.messages[0]?.secure).toBe(true);
  });

  it("with ?tls=required, refuses a self-signed certificate and accepts it with verify=false", async () => {
    const upstream = await sink();
    const refused = await queue(`${upstream.url}?tls=required`);
    const deferred = await waitForStatus(ctx.db, refused.message.id, "deferred");
    expect(deferred.lastError).toMatch(/self[- ]signed certificate/i);
    expect(upstream.messages).toHaveLength(0);

    const accepted = await queue(`${upstream.url}?tls=required&verify=false`);
    await waitForStatus(ctx.db, accepted.message.id, "delivered");
    expect(upstream.messages.map((m) => m.secure)).toEqual([true]);
  });

  it("never sends AUTH to an upstream without STARTTLS: deferred with the reason, unless tls=none", async () => {
    const password = "cleartext-Secret-p@ss";
    const upstream = await sink({
      starttls: false,
      allowInsecureAuth: true,
      auth: { user: "relay-user", pass: password },
    });
    const withheld = await queue(upstream.url);
    const deferred = await waitForStatus(ctx.db, withheld.message.id, "deferred");
    expect(deferred.lastError).toMatch(/offers AUTH without TLS: credentials are not sent in the clear/);
    const attempts = await ctx.db.deliveryAttempt.findMany({ where: { messageId: withheld.message.id } });
    expect(attempts[0]).toMatchObject({ outcome: "deferred", code: null });
    expect(attempts[0]?.response).toContain("tls=none");
    expect(upstream.authAttempts).toEqual([]);
    expect(upstream.messages).toHaveLength(0);

    const allowed = await queue(`${upstream.url}?tls=none`);
    await waitForStatus(ctx.db, allowed.message.id, "delivered");
    expect(upstream.authAttempts).toEqual([{ user: "relay-user", secure: false }]);
    expect(upstream.messages.map((m) => m.user)).toEqual(["relay-user"]);
  });

  it("uses STARTTLS when offered on smtp://", async () => {
    const upstream = await sink();
    const { message } = await queue(upstream.url);
    await waitForStatus(ctx.db, message.id, "delivered");
    expect(upstream.messages[0]?.secure).toBe(true);
  });

  it("with ?tls=required, delivers over STARTTLS and defers an upstream that does not offer it", async () => {
    const withTls = await sink();
    const first = await queue(`${withTls.url}?tls=required&verify=false`);
    await waitForStatus(ctx.db, first.message.id, "delivered");
    expect(withTls.messages[0]?.secure).toBe(true);

    const withoutTls = await sink({ starttls: false });
    const second = await queue(`${withoutTls.url}?tls=required`);
    const deferred = await waitForStatus(ctx.db, second.message.id, "deferred");
    expect(deferred.lastError).toMatch(/STARTTLS|TLS/i);
    expect(withoutTls.messages).toHaveLength(0);
  });

  it("authenticates with the stored (sealed) upstream password and never records it", async () => {
    const password = "upstream-Secret-p@ss";
    const upstream = await sink({ auth: { user: "relay-user", pass: password } });
    const { project, message } = await queue(upstream.url);
    expect(project.upstreamUrl).not.toContain(password);
    await waitForStatus(ctx.db, message.id, "delivered");
    expect(upstream.messages[0]?.user).toBe("relay-user");
    const attempts = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    const audit = await ctx.db.auditEvent.findMany({ where: { projectId: project.id } });
    expect(JSON.stringify(attempts)).not.toContain(password);
    expect(JSON.stringify(audit, (_k, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain(password);
    expect(logged).toContain(message.id);
    expect(logged).not.toContain(password);
  });

  it("defers (does not fail) when the upstream refuses the stored credentials", async () => {
    const upstream = await sink({ auth: { user: "relay-user", pass: "right" } });
    const { message } = await queue(upstream.url.replace(":right@", ":Wr0ng-Secret-9@"));
    const deferred = await waitForStatus(ctx.db, message.id, "deferred");
    const [attempt] = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempt).toMatchObject({ outcome: "deferred", code: 535 });
    expect(deferred.lastError).not.toContain("Wr0ng-Secret-9");
    expect(logged).toContain(message.id);
    expect(logged).not.toContain("Wr0ng-Secret-9");
  });
});
