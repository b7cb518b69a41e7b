import {
  backlogKey,
  countQueuedMessages,
  createDeliveryProducer,
  createDeliveryQueue,
  type DeliveryJob,
  planDeliveryJobs,
} from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

it("adds one job per message id, prioritised by its project's backlog", async () => {
  const producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  const a = "0190d9a0-0000-7000-8000-00000000000a";
  const b = "0190d9a0-0000-7000-8000-00000000000b";
  await producer.enqueueMany([
    { id: "00000000-0000-7000-8000-000000000001", projectId: a },
    { id: "00000000-0000-7000-8000-000000000002", projectId: a },
  ]);
  await producer.enqueue({ id: "00000000-0000-7000-8000-000000000003", projectId: b });
  // Idempotent: the same message again does not make a second job.
  await producer.enqueue({ id: "00000000-0000-7000-8000-000000000001", projectId: a });
  const jobs = await queue.getJobs(["prioritized", "waiting"]);
  const messageOf = (data: DeliveryJob) => ("messageId" in data ? data.messageId : undefined);
  expect(jobs.map((job) => [job.id, messageOf(job.data), job.priority]).sort()).toEqual([
    ["00000000-0000-7000-8000-000000000001", "00000000-0000-7000-8000-000000000001", 1],
    ["00000000-0000-7000-8000-000000000002", "00000000-0000-7000-8000-000000000002", 2],
    ["00000000-0000-7000-8000-000000000003", "00000000-0000-7000-8000-000000000003", 1],
  ]);
  expect(await ctx.redis.hget(backlogKey(ctx.redis, ctx.redisKeyPrefix), b)).toBe("1");
  await producer.close();
  await queue.close();
});

it("deliverNow promotes a message waiting for its retry delay", async () => {
  const producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  const message = {
    id: "00000000-0000-7000-8000-0000000000d1",
    projectId: "0190d9a0-0000-7000-8000-00000000000c",
  };
  await producer.enqueue(message, { delayMs: 3_600_000 });
  expect(await (await queue.getJob(message.id))?.isDelayed()).toBe(true);
  await producer.deliverNow(message);
  expect(await (await queue.getJob(message.id))?.isDelayed()).toBe(false);
  await producer.close();
  await queue.close();
});

it("plans one job per project for messages accepted together, counted in messages", async () => {
  const prefix = `${ctx.redisKeyPrefix}:planned`;
  const producer = createDeliveryProducer(ctx.redis, prefix);
  const queue = createDeliveryQueue(ctx.redis, prefix);
  const a = "0190d9a0-0000-7000-8000-0000000000a1";
  const b = "0190d9a0-0000-7000-8000-0000000000b1";
  const id = (n: number) => `00000000-0000-7000-8000-00000000010${n}`;
  const jobs = planDeliveryJobs([
    { id: id(1), projectId: a },
    { id: id(2), projectId: b },
    { id: id(3), projectId: a },
    { id: id(4), projectId: a },
  ]);
  // Project b's only message keeps its own id as job id; project a's three share a new one.
  expect(jobs.map((job) => [job.projectId, job.messageIds])).toEqual([
    [a, [id(1), id(3), id(4)]],
    [b, [id(2)]],
  ]);
  expect(jobs[1]?.id).toBe(id(2));
  expect(jobs[0]?.id).not.toBe(id(1));
  await producer.enqueuePlanned(jobs);
  // The next job of project a starts after the three it already has.
  await producer.enqueuePlanned(planDeliveryJobs([{ id: id(5), projectId: a }]));

  const added = await queue.getJobs(["prioritized", "waiting"]);
  const byId = new Map(added.map((job) => [job.id, job]));
  expect(byId.get(jobs[0]?.id)?.data).toEqual({ messageIds: [id(1), id(3), id(4)], projectId: a });
  expect(byId.get(jobs[0]?.id)?.priority).toBe(1);
  expect(byId.get(id(2))?.data).toEqual({ messageId: id(2), projectId: b });
  expect(byId.get(id(2))?.priority).toBe(1);
  expect(byId.get(id(5))?.priority).toBe(4);
  expect(added).toHaveLength(3);
  // In-flow control reads messages, not jobs.
  expect(await countQueuedMessages(ctx.redis, prefix)).toBe(5);

  // A retry is not new work: it keeps the priority it is given and counts into no backlog.
  await producer.enqueue({ id: id(6), projectId: b }, { delayMs: 60_000, priority: 7 });
  const retry = await queue.getJob(id(6));
  expect(await retry?.isDelayed()).toBe(true);
  expect(retry?.opts.priority).toBe(7);
  expect(await countQueuedMessages(ctx.redis, prefix)).toBe(5);
  await producer.close();
  await queue.close();
});
