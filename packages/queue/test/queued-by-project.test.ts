import { countQueuedMessagesByProject, createBacklogLedger, createDeliveryProducer } from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

it("counts each project's messages waiting for a worker, apart from the others'", async () => {
  const producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  const a = "0190d9a0-0000-7000-8000-0000000000a1";
  const b = "0190d9a0-0000-7000-8000-0000000000b1";
  const id = (n: number) => `00000000-0000-7000-8000-00000000020${n}`;
  expect(await countQueuedMessagesByProject(ctx.redis, ctx.redisKeyPrefix)).toEqual(new Map());
  await producer.enqueueMany([
    { id: id(1), projectId: a },
    { id: id(2), projectId: b },
    { id: id(3), projectId: b },
    { id: id(4), projectId: b },
  ]);
  // A retry waiting for its time is not waiting for a worker.
  await producer.enqueue({ id: id(5), projectId: a }, { delayMs: 3_600_000 });
  expect(await countQueuedMessagesByProject(ctx.redis, ctx.redisKeyPrefix)).toEqual(
    new Map([
      [a, 1],
      [b, 3],
    ]),
  );
  // A worker takes a's message and one of b's: a has nothing queued any more.
  const ledger = createBacklogLedger(ctx.redis, ctx.redisKeyPrefix);
  ledger.leave(a);
  ledger.leave(b);
  await ledger.close();
  expect(await countQueuedMessagesByProject(ctx.redis, ctx.redisKeyPrefix)).toEqual(new Map([[b, 2]]));
  await producer.close();
});
