import { randomUUID } from "node:crypto";
import { sqlPoolOf } from "@postern/db";
import { countQueuedMessages, createDeliveryQueue, planDeliveryJobs } from "@postern/queue";
import { DestinationThrottle, UpstreamTransports } from "@postern/relay";
import { createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import { sweep } from "@postern/worker";
import { afterAll, beforeAll, expect, it } from "vitest";
import { registerDeliveryMetrics } from "../src/metrics";
import { producerFor } from "./running";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ BODY_RETENTION_DAYS: "7" });
});
afterAll(() => ctx?.close());

/** A sweep's "now" one sweep interval and a second later: messages made by the test are due then. */
function afterInterval(): Date {
  return new Date(Date.now() + ctx.config.delivery.sweepIntervalMs + 1_000);
}

function sweeperDeps() {
  return {
    config: ctx.config,
    sql: sqlPoolOf(ctx.db),
    redis: ctx.redis,
    queue: createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix),
    producer: producerFor(ctx),
  };
}

it("prunes old bodies of delivered and failed messages only, never of pending ones", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const old = new Date(Date.now() - 30 * 86_400_000);
  const byStatus = {} as Record<"queued" | "deferred" | "delivered" | "failed" | "recentDelivered", string>;
  for (const status of ["queued", "deferred", "delivered", "failed", "recentDelivered"] as const) {
    const message = await createQueuedMessageFixture(ctx.db, project);
    byStatus[status] = message.id;
    const final = status === "recentDelivered" ? "delivered" : status;
    await ctx.db.message.update({
      where: { id: message.id },
      // A deferred message whose retry is far away: the sweep must not touch it either way.
      data: { status: final, nextAttemptAt: status === "deferred" ? new Date(Date.now() + 3_600_000) : null },
    });
    if (status !== "recentDelivered") {
      await ctx.db.messageBody.update({ where: { messageId: message.id }, data: { createdAt: old } });
    }
  }
  const deps = sweeperDeps();
  const result = await sweep(deps, afterInterval());
  expect(result.prunedBodies).toBe(2);
  const bodies = await ctx.db.messageBody.findMany({ select: { messageId: true } });
  const kept = new Set(bodies.map((b) => b.messageId));
  expect(kept.has(byStatus.queued)).toBe(true);
  expect(kept.has(byStatus.deferred)).toBe(true);
  expect(kept.has(byStatus.recentDelivered)).toBe(true);
  expect(kept.has(byStatus.delivered)).toBe(false);
  expect(kept.has(byStatus.failed)).toBe(false);
  // Metadata stays: only the body goes.
  expect(await ctx.db.message.count({ where: { projectId: project.id } })).toBe(5);
  // The queued message had no job: the sweep gave it one; the deferred one is not due yet.
  expect(result.requeued).toBe(1);
  expect(await deps.queue.getJob(byStatus.queued)).toBeDefined();
  expect(await deps.queue.getJob(byStatus.deferred)).toBeUndefined();
  // A second sweep finds the job alive and adds nothing.
  expect((await sweep(deps, afterInterval())).requeued).toBe(0);
  await deps.queue.close();
  await deps.producer.close();
});

it("requeues every due message, a thousand at a time, and the gauge reads the oldest pending one", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  await ctx.db.message.createMany({
    data: Array.from({ length: 1_005 }, () => ({
      id: randomUUID(),
      projectId: project.id,
      mailFrom: "sender@example.com",
      size: 1,
      sha256: "0".repeat(64),
    })),
  });
  const hourAgo = new Date(Date.now() - 3_600_000);
  const due = await createQueuedMessageFixture(ctx.db, project);
  await ctx.db.message.update({
    where: { id: due.id },
    data: { status: "deferred", nextAttemptAt: new Date(Date.now() - 1000), createdAt: hourAgo },
  });

  const deps = sweeperDeps();
  const transports = new UpstreamTransports({ maxConnections: 1 });
  const throttle = new DestinationThrottle(deps.redis, ctx.redisKeyPrefix, { ceiling: 30 });
  try {
    // The first test's queued message still has its job; these 1,006 get theirs, over two pages.
    expect((await sweep(deps, afterInterval())).requeued).toBe(1_006);
    expect(await deps.queue.getJob(due.id)).toBeDefined();

    const registry = createMetricsRegistry();
    registerDeliveryMetrics(registry, {
      queue: deps.queue,
      sql: deps.sql,
      transports,
      throttle,
      queuedMessages: () => countQueuedMessages(deps.redis, ctx.redisKeyPrefix),
    });
    const sample = async (name: string) =>
      Number(new RegExp(`^${name} (\\S+)$`, "m").exec(await registry.getSingleMetricAsString(name))?.[1]);
    const seconds = await sample("postern_delivery_oldest_pending_seconds");
    expect(seconds).toBeGreaterThanOrEqual(3_600);
    expect(seconds).toBeLessThan(3_700);
    // The sweep set the backlogs from PostgreSQL: this test's 1,005 queued messages and the first
    // test's one (the deferred message is not queued).
    expect(await sample("postern_delivery_queued_messages")).toBe(1_006);
  } finally {
    transports.close();
    throttle.close();
    await deps.queue.close();
    await deps.producer.close();
  }
});

it("counts the job a message was accepted in as its job, and leaves messages just accepted alone", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const batch = [
    await createQueuedMessageFixture(ctx.db, project),
    await createQueuedMessageFixture(ctx.db, project),
  ];
  const [job] = planDeliveryJobs(batch.map((m) => ({ id: m.id, projectId: project.id })));
  if (!job) throw new Error("no job planned");
  await ctx.db.message.updateMany({
    where: { id: { in: batch.map((m) => m.id) } },
    data: { deliveryJobId: job.id },
  });
  const deps = sweeperDeps();
  try {
    await deps.producer.enqueuePlanned([job]);
    const alone = await createQueuedMessageFixture(ctx.db, project);
    // The batch's job is alive; the lone message is younger than a sweep interval, so its own
    // enqueue may still be on its way: neither gets a job of its own.
    expect((await sweep(deps)).requeued).toBe(0);
    expect((await sweep(deps, afterInterval())).requeued).toBe(1);
    expect(await deps.queue.getJob(alone.id)).toBeDefined();
    expect(await deps.queue.getJob(batch[0]?.id as string)).toBeUndefined();

    // The batch's job is lost (Redis flushed, say): each of its messages gets one of its own.
    await deps.queue.remove(job.id);
    expect((await sweep(deps, afterInterval())).requeued).toBe(2);
    for (const message of batch) expect(await deps.queue.getJob(message.id)).toBeDefined();
  } finally {
    await deps.queue.close();
    await deps.producer.close();
  }
});

it("finds pending messages through the pending-only index, not by reading every message", async () => {
  const pool = sqlPoolOf(ctx.db);
  // The sweep's own statements, captured as it runs them, then planned with sequential scans off:
  // PostgreSQL then takes the partial index if, and only if, the statement's WHERE implies its
  // predicate, the property a table of millions of delivered messages depends on.
  const statements: { text: string; values?: unknown[] }[] = [];
  const capturing = {
    query: ((text: string, values?: unknown[]) => {
      statements.push({ text, values });
      return pool.query(text, values);
    }) as typeof pool.query,
  };
  await sweep({ ...sweeperDeps(), sql: capturing }, afterInterval());
  // The backlog counts, and the due messages' first page: a later page starts after a cursor,
  // and over the few rows of a test database the primary key's range is then cheaper.
  const reading: typeof statements = [];
  for (const statement of statements) {
    const fromMessage = /^\s*SELECT[\s\S]*FROM "Message"/.test(statement.text);
    if (fromMessage && !reading.some((s) => s.text === statement.text)) reading.push(statement);
  }
  expect(reading).toHaveLength(2);
  const client = await pool.connect();
  try {
    await client.query("SET enable_seqscan = off");
    for (const { text, values } of reading) {
      const { rows } = await client.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${text}`, values);
      // The pending-only index, or (for the backlog count, as the planner's statistics of the
      // moment decide) an index scan bounded by status: never a scan of every message.
      const plan = JSON.stringify(rows[0]?.["QUERY PLAN"]);
      expect(plan).not.toContain('"Node Type":"Seq Scan"');
      expect(plan).toMatch(
        /"Index Name":"Message_status_nextAttemptAt_idx"|"Index Cond":"\(status = 'queued'/,
      );
    }
  } finally {
    await client.query("RESET enable_seqscan");
    client.release();
  }
});
