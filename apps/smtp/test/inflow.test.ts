import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { startEmbeddedRedis } from "@postern/embedded";
import {
  createBacklogLedger,
  createDeliveryProducer,
  createRedis,
  planDeliveryJobs,
  type Redis,
} from "@postern/queue";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext | undefined;
let smtp: RunningSmtp | undefined;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await smtp?.stop();
  smtp = undefined;
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await ctx?.close();
  ctx = undefined;
});

/** A project of the test, with its delivery backlog set up before the SMTP role starts. */
interface ProjectSetup {
  /** Messages queued for delivery (no worker runs), one job each. */
  queued?: number;
  /** Messages queued as one job (accepted together). */
  queuedBatch?: number;
  /** Messages waiting for a retry an hour away. */
  delayedRetries?: number;
  senderDomains?: string[];
}

interface Started {
  ctx: TestContext;
  smtp: RunningSmtp;
  metrics: Registry;
  /** What the SMTP role logged (warn and above). */
  logged: () => string;
  /** The projects of `start`'s `projects`, in order. */
  projects: ProjectFixture[];
}

/**
 * A context with `env`, a project for each of `projects` with its messages queued, and then the
 * SMTP role started: its first reading of the backlogs sees them.
 */
async function start(
  env: Record<string, string>,
  options: { projects?: ProjectSetup[]; redis?: Redis } = {},
): Promise<Started> {
  const c = await createTestContext(env);
  ctx = c;
  const redis = options.redis ?? c.redis;
  const projects: ProjectFixture[] = [];
  for (const setup of options.projects ?? [{}]) {
    const fixture = await createProjectFixture(c.db, c.config, { senderDomains: setup.senderDomains });
    await enqueue(redis, c.redisKeyPrefix, fixture.project.id, setup);
    projects.push(fixture);
  }
  const metrics = createMetricsRegistry();
  let output = "";
  const destination = new Writable({
    write(chunk, _encoding, done) {
      output += chunk.toString();
      done();
    },
  });
  const s = await startSmtp(
    { ...c, redis, log: createLogger({ level: "warn" }, destination), metrics },
    { smtpPort: 0, smtpsPort: 0 },
  );
  smtp = s;
  return { ctx: c, smtp: s, metrics, logged: () => output, projects };
}

async function enqueue(redis: Redis, prefix: string, projectId: string, setup: ProjectSetup) {
  const producer = createDeliveryProducer(redis, prefix);
  const messages = (count = 0) => Array.from({ length: count }, () => ({ id: randomUUID(), projectId }));
  await producer.enqueueMany(messages(setup.queued));
  await producer.enqueueMany(messages(setup.delayedRetries), { delayMs: 3_600_000 });
  const batch = messages(setup.queuedBatch);
  if (batch.length > 0) await producer.enqueuePlanned(planDeliveryJobs(batch));
  await producer.close();
}

/** The delivery worker taking `count` of the project's messages: counted out of its backlog. */
async function takeQueued(started: Started, projectId: string, count: number) {
  const ledger = createBacklogLedger(started.ctx.redis, started.ctx.redisKeyPrefix);
  for (let i = 0; i < count; i++) ledger.leave(projectId);
  await ledger.close();
}

/** An authenticated session of `project` (the first one by default), ready for MAIL. */
async function session(started: Started, project = started.projects[0] as ProjectFixture) {
  const { client, auth: reply } = await RawSmtp.session(started.smtp.ports.smtp, project.smtp);
  expect(reply?.code).toBe(235);
  cleanups.push(async () => client.close());
  return client;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether `reply` settles within `ms` (without consuming it). */
async function settlesWithin(reply: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([reply.then(() => true), sleep(ms).then(() => false)]);
}

/** A metric sample from the registry's text output (the series must exist). */
async function sample(metrics: Registry, series: string): Promise<number> {
  const text = await metrics.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  expect(line, series).toBeDefined();
  return Number(line?.slice(series.length + 1));
}

describe("in-flow control at MAIL FROM", () => {
  it("holds MAIL while the backlog is over the threshold and answers 250 as soon as it falls", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "10" },
      { projects: [{ queued: 10 }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    const mail = client.read(15_000);
    expect(await settlesWithin(mail, 700)).toBe(false);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(1);

    const drainedAt = Date.now();
    await takeQueued(started, started.projects[0]?.project.id as string, 10);
    const reply = await mail;
    expect([reply.code, reply.enhanced]).toEqual([250, "2.1.0"]);
    // Released by the falling backlog, not by the 10 s delay.
    expect(Date.now() - drainedAt).toBeLessThan(5_000);
    expect(
      await sample(started.metrics, 'postern_smtp_inflow_hold_duration_seconds_count{ended="backlog"}'),
    ).toBe(1);
  });

  it("holds only the project whose own backlog is over: A is answered at once while B is held", async () => {
    // B's upstream is stuck and its messages pile up; A's queue is empty. A is not slowed for B.
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "10" },
      { projects: [{}, { queued: 10 }] },
    );
    const [a, b] = started.projects as [ProjectFixture, ProjectFixture];
    const clientA = await session(started, a);
    const clientB = await session(started, b);
    clientB.write("MAIL FROM:<app@example.com>\r\n");
    const mailB = clientB.read(15_000);
    expect(await settlesWithin(mailB, 700)).toBe(false);

    // Well within the 10 s a held MAIL would wait, and nothing of A's was held.
    clientA.write("MAIL FROM:<app@example.com>\r\n");
    const mailA = await clientA.read(3_000);
    expect([mailA.code, mailA.enhanced]).toEqual([250, "2.1.0"]);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(1);
    expect(await settlesWithin(mailB, 0)).toBe(false);

    // B goes on once its own backlog falls.
    await takeQueued(started, b.project.id, 10);
    const replyB = await mailB;
    expect([replyB.code, replyB.enhanced]).toEqual([250, "2.1.0"]);
    expect(
      await sample(started.metrics, 'postern_smtp_inflow_hold_duration_seconds_count{ended="backlog"}'),
    ).toBe(1);
  });

  it("counts messages, not jobs: one job of ten messages accepted together holds MAIL", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "10" },
      { projects: [{ queuedBatch: 10 }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    expect(await settlesWithin(client.read(15_000), 700)).toBe(false);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(1);
  });

  it("answers a refused MAIL at once, even while the backlog is over the threshold", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "10" },
      { projects: [{ queued: 10, senderDomains: ["example.com"] }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@elsewhere.example>\r\n");
    const reply = await client.read(3_000);
    expect([reply.code, reply.enhanced]).toEqual([553, "5.7.1"]);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(0);
  });

  it("lets a held transaction proceed after SMTP_INFLOW_DELAY: the message is accepted", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "0.3" },
      { projects: [{ queued: 10 }] },
    );
    const client = await session(started);
    const mail = await client.command("MAIL FROM:<app@example.com>");
    expect(mail.code).toBe(250);
    expect((await client.command("RCPT TO:<someone@example.org>")).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    client.write("From: app@example.com\r\nSubject: held\r\n\r\nbody\r\n.\r\n");
    const accepted = await client.read();
    expect(accepted.text).toMatch(/^2\.0\.0 .*queued as [0-9a-f-]{36}$/);
    expect(await started.ctx.db.message.count()).toBe(1);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(1);
    expect(
      await sample(started.metrics, 'postern_smtp_inflow_hold_duration_seconds_count{ended="delay"}'),
    ).toBe(1);
  });

  it("answers MAIL at once below the threshold; delayed retries do not count as waiting", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "10" },
      { projects: [{ queued: 4, delayedRetries: 20 }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    const reply = await client.read(3_000);
    expect(reply.code).toBe(250);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(0);
  });

  it("never holds with SMTP_INFLOW_BACKLOG=0", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "0", SMTP_INFLOW_DELAY: "10" },
      { projects: [{ queued: 10 }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    const reply = await client.read(3_000);
    expect(reply.code).toBe(250);
    expect(await sample(started.metrics, "postern_smtp_inflow_held_total")).toBe(0);
  });

  it("at shutdown a held MAIL hears 421 4.3.2 and the stop does not wait for the delay", async () => {
    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "30" },
      { projects: [{ queued: 10 }] },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    const mail = client.read(15_000);
    expect(await settlesWithin(mail, 500)).toBe(false);
    const stoppedAt = Date.now();
    const stopped = started.smtp.stop();
    smtp = undefined;
    const reply = await mail;
    expect([reply.code, reply.enhanced]).toEqual([421, "4.3.2"]);
    expect(await client.waitClosed()).toBe(true);
    await stopped;
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
  });
});

describe("in-flow control without Redis", () => {
  let root: string;
  it("stops holding when the queue depth cannot be read, and logs the outage once", async () => {
    root = await mkdtemp(join(tmpdir(), "postern-inflow-"));
    await chmod(root, 0o755);
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const redisServer = await startEmbeddedRedis({ dir: join(root, "redis"), ephemeral: true });
    cleanups.push(() => redisServer.stop().catch(() => {}));
    const redis = createRedis(redisServer.url);
    cleanups.push(async () => redis.disconnect());

    const started = await start(
      { SMTP_INFLOW_BACKLOG: "5", SMTP_INFLOW_DELAY: "30" },
      { projects: [{ queued: 10 }], redis },
    );
    const client = await session(started);
    client.write("MAIL FROM:<app@example.com>\r\n");
    const mail = client.read(20_000);
    expect(await settlesWithin(mail, 500)).toBe(false);

    await redisServer.stop();
    // Released by the failing poll (within the 2 s Redis command timeout), not by the 30 s delay.
    const reply = await mail;
    expect(reply.code).toBe(250);
    const rcpt = await client.command("RCPT TO:<someone@example.org>");
    expect([rcpt.code, rcpt.enhanced]).toEqual([451, "4.3.0"]);
    // Several polls fail meanwhile; the outage is logged once.
    await sleep(1_000);
    const warnings = started
      .logged()
      .split("\n")
      .filter((line) => line.includes("delivery queue depth unreadable"));
    expect(warnings).toHaveLength(1);
    expect(
      await sample(started.metrics, 'postern_smtp_inflow_hold_duration_seconds_count{ended="unavailable"}'),
    ).toBe(1);
  });
});
