import { backlogKey, createBacklogLedger, enterBacklog, lastPriorityKey, resetBacklog } from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

it("counts jobs out of their projects' backlogs in one batch, dropping counts that reach zero", async () => {
  const key = backlogKey(ctx.redis, ctx.redisKeyPrefix);
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
  const key = backlogKey(ctx.redis, ctx.redisKeyPrefix);
  await ctx.redis.del(key);
  const ledger = createBacklogLedger(ctx.redis, ctx.redisKeyPrefix, { flushMs: 60_000 });
  ledger.leave("c");
  await ledger.close();
  expect(await ctx.redis.hexists(key, "c")).toBe(0);
});

it("keeps a project's priorities in arrival order while its backlog shrinks, and restarts them once it is empty", async () => {
  const prefix = `${ctx.redisKeyPrefix}:order`;
  const ledger = createBacklogLedger(ctx.redis, prefix, { flushMs: 60_000 });
  const first = await enterBacklog(ctx.redis, prefix, Array(10).fill("a"));
  expect(first).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  for (let i = 0; i < 5; i++) ledger.leave("a");
  await ledger.flush();
  // Five still wait with priorities 6..10: a newcomer must not get 6 and overtake them.
  expect(await enterBacklog(ctx.redis, prefix, ["a", "b"])).toEqual([10, 1]);
  for (let i = 0; i < 6; i++) ledger.leave("a");
  await ledger.close();
  expect(await ctx.redis.hexists(lastPriorityKey(ctx.redis, prefix), "a")).toBe(0);
  expect(await enterBacklog(ctx.redis, prefix, ["a"])).toEqual([1]);
});

it("the sweeper's reset keeps the last priority of projects with messages queued and drops the others", async () => {
  const prefix = `${ctx.redisKeyPrefix}:reset`;
  await enterBacklog(ctx.redis, prefix, ["a", "a", "a", "b"]);
  await resetBacklog(ctx.redis, prefix, new Map([["a", 1]]));
  expect(await ctx.redis.hgetall(backlogKey(ctx.redis, prefix))).toEqual({ a: "1" });
  expect(await ctx.redis.hgetall(lastPriorityKey(ctx.redis, prefix))).toEqual({ a: "3" });
  expect(await enterBacklog(ctx.redis, prefix, ["a", "b"])).toEqual([3, 1]);
});

it("the sweeper's reset lowers counts to PostgreSQL's queued messages and never raises one", async () => {
  const prefix = `${ctx.redisKeyPrefix}:bound`;
  const ledger = createBacklogLedger(ctx.redis, prefix, { flushMs: 60_000 });
  // Project a: 600 accepted, 590 taken by workers and not yet recorded, so still `queued` in
  // PostgreSQL; 10 wait for a worker. Project b: 5 counted in, their decrements lost with a worker.
  await enterBacklog(ctx.redis, prefix, [...Array(600).fill("a"), ...Array(5).fill("b")]);
  for (let i = 0; i < 590; i++) ledger.leave("a");
  await ledger.close();
  await resetBacklog(
    ctx.redis,
    prefix,
    new Map([
      ["a", 600],
      ["b", 2],
      ["c", 7],
    ]),
  );
  // a keeps its 10 (set to 600, in-flow control held its clients long after the queue drained); b
  // comes down to 2; c, never counted in, is not raised.
  expect(await ctx.redis.hgetall(backlogKey(ctx.redis, prefix))).toEqual({ a: "10", b: "2" });
  await resetBacklog(ctx.redis, prefix, new Map([["a", 4]]));
  expect(await ctx.redis.hgetall(backlogKey(ctx.redis, prefix))).toEqual({ a: "4" });
  expect(Object.keys(await ctx.redis.hgetall(lastPriorityKey(ctx.redis, prefix)))).toEqual(["a"]);
});

it("caps priorities at BullMQ's largest, 2^21-1", async () => {
  const prefix = `${ctx.redisKeyPrefix}:cap`;
  await ctx.redis.hset(backlogKey(ctx.redis, prefix), "a", String(2 ** 22));
  expect(await enterBacklog(ctx.redis, prefix, ["a"])).toEqual([2 ** 21 - 1]);
});

it("sends each script whole once per connection, and by its SHA1 after that", async () => {
  const prefix = `${ctx.redisKeyPrefix}:sha-${Date.now()}`;
  const connection = ctx.redis.duplicate();
  const monitor = await ctx.redis.monitor();
  const calls: string[] = [];
  monitor.on("monitor", (_time: string, args: string[]) => {
    const command = args[0]?.toLowerCase();
    if ((command === "eval" || command === "evalsha") && args.includes(backlogKey(ctx.redis, prefix)))
      calls.push(command);
  });
  await enterBacklog(connection, prefix, ["a"]);
  await enterBacklog(connection, prefix, ["a", "b"]);
  await enterBacklog(connection, prefix, ["b"]);
  expect(await enterBacklog(connection, prefix, ["a"])).toEqual([3]);
  await new Promise((resolve) => setTimeout(resolve, 50));
  monitor.disconnect();
  connection.disconnect();
  expect(calls).toEqual(["eval", "evalsha", "evalsha", "evalsha"]);
});
