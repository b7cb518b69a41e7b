import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDatabase, migrate } from "@postern/db";
import { startEmbeddedPostgres } from "@postern/embedded";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { producerFor, runWorker } from "./running";
import { until, waitForStatus } from "./wait";

const cli = join(import.meta.dirname, "../../cli/bin/postern.js");

let ctx: TestContext;
let sink: SmtpSink;
const children: ChildProcess[] = [];

beforeAll(async () => {
  ctx = await createTestContext({
    DELIVERY_BACKOFF: "1",
    DELIVERY_SWEEP_INTERVAL: "1",
    DELIVERY_STALLED_TIMEOUT: "2",
  });
  sink = await SmtpSink.start();
});
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL");
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

/** `postern start worker` as its own process on the test's database and Redis. */
async function spawnWorker(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cli, "start", "worker"], {
    env: { ...process.env, ...ctx.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Postern is running")) resolve();
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`worker exited ${code}: ${output}`)));
  });
  return child;
}

async function activeJobs(): Promise<number> {
  return ctx.redis.llen(`${ctx.redisKeyPrefix}:delivery:active`);
}

describe("nothing accepted is lost", () => {
  it("a worker killed with SIGKILL mid-delivery: another worker delivers the message (at most once more)", async () => {
    sink.messages.length = 0;
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    sink.dataDelayMs = 2_000;
    const first = await spawnWorker();
    const producer = producerFor(ctx);
    await producer.enqueue(message);
    await producer.close();
    // The job is taken and the upstream holds the DATA reply back: kill the worker now.
    await until(async () => (await activeJobs()) > 0, "an active delivery job");
    await new Promise((resolve) => setTimeout(resolve, 500));
    first.kill("SIGKILL");
    sink.dataDelayMs = 0;

    await spawnWorker();
    const delivered = await waitForStatus(ctx.db, message.id, "delivered", 25_000);
    expect(delivered.attempts).toBe(1);
    // The killed session may or may not have completed at the sink: once, or once more.
    expect(sink.messages.length).toBeGreaterThanOrEqual(1);
    expect(sink.messages.length).toBeLessThanOrEqual(2);
  }, 45_000);

  it("Redis flushed after accept: the sweeper re-queues and delivers every message", async () => {
    sink.messages.length = 0;
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const messages = [];
    for (let i = 0; i < 5; i++) messages.push(await createQueuedMessageFixture(ctx.db, project));
    const producer = producerFor(ctx);
    await producer.enqueueMany(messages);
    await producer.close();
    // Everything this test context has in Redis (jobs, backlog counts, locks) is gone.
    const keys = await ctx.redis.keys(`${ctx.redisKeyPrefix}*`);
    expect(keys.length).toBeGreaterThan(0);
    await ctx.redis.del(...keys);

    const worker = await runWorker(ctx);
    try {
      for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
      expect(sink.messages).toHaveLength(5);
    } finally {
      await worker.stop();
    }
  });

  it("PostgreSQL restarted during delivery: every message is delivered", async () => {
    sink.messages.length = 0;
    const root = await mkdtemp(join(tmpdir(), "postern-restart-"));
    await chmod(root, 0o755);
    const dir = join(root, "postgres");
    let postgres = await startEmbeddedPostgres({ dir });
    const db = createDatabase(postgres.url, { max: 5 });
    let worker: Awaited<ReturnType<typeof runWorker>> | undefined;
    try {
      await migrate(postgres.url);
      const { project } = await createProjectFixture(db, ctx.config, { upstream: sink.url });
      const messages = [];
      for (let i = 0; i < 3; i++) messages.push(await createQueuedMessageFixture(db, project));
      sink.dataDelayMs = 1_500;
      worker = await runWorker(ctx, { db, config: { ...ctx.config, databaseUrl: postgres.url } });
      const producer = producerFor(ctx);
      await producer.enqueueMany(messages);
      await producer.close();
      // Deliveries are at the upstream, waiting for its DATA reply, when PostgreSQL goes away.
      await until(async () => (await activeJobs()) > 0, "an active delivery job");
      await postgres.stop();
      sink.dataDelayMs = 0;
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      postgres = await startEmbeddedPostgres({ dir, port: postgres.port });

      for (const message of messages) await waitForStatus(db, message.id, "delivered", 40_000);
      // At least once: a delivery whose result could not be recorded is sent again.
      expect(sink.messages.length).toBeGreaterThanOrEqual(3);
    } finally {
      await worker?.stop();
      await db.$disconnect();
      await postgres.stop();
      await rm(root, { recursive: true, force: true });
    }
  }, 90_000);

  it("graceful shutdown stops taking jobs and finishes the delivery in flight", async () => {
    sink.messages.length = 0;
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const inFlight = await createQueuedMessageFixture(ctx.db, project);
    const worker = await runWorker(ctx);
    sink.dataDelayMs = 1_000;
    const producer = producerFor(ctx);
    await producer.enqueue(inFlight);
    await until(async () => (await activeJobs()) > 0, "an active delivery job");
    await worker.stop();
    sink.dataDelayMs = 0;
    // Recorded before stop() returned, not left to another worker.
    const message = await ctx.db.message.findUniqueOrThrow({ where: { id: inFlight.id } });
    expect(message.status).toBe("delivered");
    // A message queued after the stop stays queued: this worker takes no more jobs.
    const after = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(after);
    await producer.close();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: after.id } })).status).toBe("queued");
  });
});
