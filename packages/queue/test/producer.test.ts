import { backlogKey, createDeliveryProducer, createDeliveryQueue } from "@postern/queue";
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
  expect(jobs.map((job) => [job.id, job.data.messageId, job.priority]).sort()).toEqual([
    ["00000000-0000-7000-8000-000000000001", "00000000-0000-7000-8000-000000000001", 1],
    ["00000000-0000-7000-8000-000000000002", "00000000-0000-7000-8000-000000000002", 2],
    ["00000000-0000-7000-8000-000000000003", "00000000-0000-7000-8000-000000000003", 1],
  ]);
  expect(await ctx.redis.hget(backlogKey(ctx.redisKeyPrefix), b)).toBe("1");
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
