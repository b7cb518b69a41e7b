import type { Project } from "@postern/db";
import {
  backlogKey,
  countQueuedMessages,
  createDeliveryQueue,
  enterBacklog,
  planDeliveryJobs,
} from "@postern/queue";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor, runWorker } from "./running";
import { until, waitForStatus } from "./wait";

let ctx: TestContext;
let sink: SmtpSink;
beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_CONCURRENCY: "2", DELIVERY_BACKOFF: "1" });
  sink = await SmtpSink.start();
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

/** Messages of one project queued as the accept path queues them: one job, named by each row. */
async function acceptedTogether(project: Pick<Project, "id">, recipients: string[]) {
  const messages = [];
  for (const to of recipients) messages.push(await createQueuedMessageFixture(ctx.db, project, { to: [to] }));
  const jobs = planDeliveryJobs(messages.map((m) => ({ id: m.id, projectId: project.id })));
  for (const job of jobs) {
    await ctx.db.message.updateMany({
      where: { id: { in: job.messageIds } },
      data: { deliveryJobId: job.id },
    });
  }
  const producer = producerFor(ctx);
  await producer.enqueuePlanned(jobs);
  await producer.close();
  return { messages, jobs };
}

/**
 * A worker whose first sweep is over: the sweep resets the backlog counts from PostgreSQL, which
 * would race with the counts a test reads. A sentinel count that the reset removes tells when.
 */
async function workerAfterFirstSweep() {
  const sentinel = "00000000-0000-7000-8000-00000000fffe";
  await ctx.redis.hset(backlogKey(ctx.redis, ctx.redisKeyPrefix), sentinel, "99");
  // An earlier test's worker swept last and its lock would skip this worker's first sweep.
  await ctx.redis.del(`${ctx.redisKeyPrefix}:delivery:sweeper-lock`);
  const worker = await runWorker(ctx);
  await until(
    async () => (await ctx.redis.hexists(backlogKey(ctx.redis, ctx.redisKeyPrefix), sentinel)) === 0,
    "the worker's first sweep",
  );
  return worker;
}

/** The sink answers the first RCPT of `address` with 451, and accepts it from then on. */
function greylistOnce(address: string) {
  let greylisted = 0;
  sink.rcptReply = (to) =>
    to === address && greylisted++ === 0 ? { code: 451, message: "4.2.1 greylisted" } : undefined;
}

it("delivers a batch job's messages; a deferred one leaves the batch for a job of its own and is retried", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  greylistOnce("later@example.net");
  const worker = await runWorker(ctx);
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  try {
    const { messages, jobs } = await acceptedTogether(project, [
      "one@example.net",
      "later@example.net",
      "three@example.net",
    ]);
    expect(jobs).toHaveLength(1);
    for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
    const attempts = await ctx.db.message.findMany({
      where: { id: { in: messages.map((m) => m.id) } },
      select: { id: true, attempts: true },
    });
    const attemptsOf = new Map(attempts.map((m) => [m.id, m.attempts]));
    expect(messages.map((m) => attemptsOf.get(m.id))).toEqual([1, 2, 1]);
    expect(sink.messages.flatMap((m) => m.rcptTo).sort()).toEqual([
      "later@example.net",
      "one@example.net",
      "three@example.net",
    ]);
    // Both jobs are finished and gone: the batch's and the retry's (job id = message id).
    expect(await queue.getJob(jobs[0]?.id as string)).toBeUndefined();
    expect(await queue.getJob(messages[1]?.id as string)).toBeUndefined();
  } finally {
    sink.rcptReply = () => undefined;
    sink.messages.length = 0;
    await queue.close();
    await worker.stop();
  }
});

it("delivers at most DELIVERY_CONCURRENCY messages at once, whatever jobs they came in", async () => {
  const first = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  const second = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  let atUpstream = 0;
  let most = 0;
  sink.mailReply = () => {
    atUpstream += 1;
    most = Math.max(most, atUpstream);
    return undefined;
  };
  sink.dataReply = () => {
    atUpstream -= 1;
    return undefined;
  };
  sink.dataDelayMs = 150;
  const worker = await runWorker(ctx);
  try {
    const batches = [
      await acceptedTogether(
        first.project,
        Array.from({ length: 5 }, (_, i) => `a${i}@example.net`),
      ),
      await acceptedTogether(
        second.project,
        Array.from({ length: 4 }, (_, i) => `b${i}@example.net`),
      ),
    ];
    for (const { messages } of batches) {
      for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
    }
    expect(sink.messages).toHaveLength(9);
    // Two at a time, out of nine that two jobs held, each project allowing 20 connections.
    expect(most).toBe(2);
  } finally {
    sink.mailReply = () => undefined;
    sink.dataReply = () => undefined;
    sink.dataDelayMs = 0;
    await worker.stop();
  }
});

it("counts a message out of its project's backlog once, when its job is first taken, not again at its retry", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  greylistOnce("later@example.net");
  const worker = await workerAfterFirstSweep();
  try {
    // Another message of the project, accepted and not yet delivered: it stays counted.
    await enterBacklog(ctx.redis, ctx.redisKeyPrefix, [project.id]);
    const { messages } = await acceptedTogether(project, ["later@example.net"]);
    const message = messages[0] as (typeof messages)[number];
    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(2);
    // The worker's ledger writes its decrements every 50 ms.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await ctx.redis.hget(backlogKey(ctx.redis, ctx.redisKeyPrefix), project.id)).toBe("1");
  } finally {
    sink.rcptReply = () => undefined;
    sink.messages.length = 0;
    await worker.stop();
  }
});

it("counts a batch's messages out of the backlog when a worker takes the job, before they are delivered", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  let atUpstream = 0;
  sink.mailReply = () => {
    atUpstream += 1;
    return undefined;
  };
  // The upstream holds each message, so two are being delivered and the third waits for a slot.
  sink.dataDelayMs = 2_000;
  const worker = await workerAfterFirstSweep();
  try {
    const { messages } = await acceptedTogether(project, ["a@example.net", "b@example.net", "c@example.net"]);
    const counted = async () =>
      Number((await ctx.redis.hget(backlogKey(ctx.redis, ctx.redisKeyPrefix), project.id)) ?? 0);
    expect(await counted()).toBe(3);
    await until(() => atUpstream === 2, "two deliveries at the upstream");
    // Taken, not delivered: nothing waits for a worker (the ledger writes every 50 ms).
    await until(
      async () => (await countQueuedMessages(ctx.redis, ctx.redisKeyPrefix)) === 0,
      "the count at 0",
    );
    expect(
      await ctx.db.message.count({ where: { id: { in: messages.map((m) => m.id) }, status: "queued" } }),
    ).toBe(3);
    for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
  } finally {
    sink.mailReply = () => undefined;
    sink.dataDelayMs = 0;
    sink.messages.length = 0;
    await worker.stop();
  }
});
