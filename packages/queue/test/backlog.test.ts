import { backlogKey, createBacklogLedger } from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

it("counts jobs out of their projects' backlogs in one batch, dropping counts that reach zero", async () => {
  const key = backlogKey(ctx.redisKeyPrefix);
  await ctx.redis.hset(key, { a: "5", b: "2" });
  // A long interval: only the explicit flush writes, so the test sees one batch.
  const ledger = createBacklogLedger(ctx.redis, ctx.redisKeyPrefix, { flushMs: 60_000 });
  for (let i = 0; i < 3; i++) ledger.leave("a");
  ledger.leave("b");
  ledger.leave("b");
  expect(await ctx.redis.hgetall(key)).toEqual({ a: "5", b: "2" });
  await ledger.flush();
  expect(await ctx.redis.hgetall(key)).toEqual({ a: "2" });
  ledger.leave("a");
  await ledger.close();
  expect(await ctx.redis.hgetall(key)).toEqual({ a: "1" });
});

it("a count gone below zero (sweeper reset meanwhile) is dropped, not left negative", async () => {
  const key = backlogKey(ctx.redisKeyPrefix);
  await ctx.redis.del(key);
  const ledger = createBacklogLedger(ctx.redis, ctx.redisKeyPrefix, { flushMs: 60_000 });
  ledger.leave("c");
  await ledger.close();
  expect(await ctx.redis.hexists(key, "c")).toBe(0);
});
