import { randomUUID } from "node:crypto";
import { createRedis } from "@postern/queue";
import { createProjectQuota } from "@postern/quota";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

const project = (quotaPerMinute: number, quotaDaily: number) => ({
  id: randomUUID(),
  quotaPerMinute,
  quotaDaily,
});

describe("project quota", () => {
  it("counts recipients and refuses the reservation that would go over the minute limit", async () => {
    const quota = createProjectQuota(ctx.redis, ctx.redisKeyPrefix);
    const p = project(3, 100);
    expect(await quota.reserve(p, 2)).toEqual({ ok: true });
    const over = await quota.reserve(p, 2);
    expect(over).toMatchObject({ ok: false, reason: "exceeded", window: "perMinute", limit: 3 });
    if (over.ok || over.reason !== "exceeded") throw new Error("expected exceeded");
    expect(over.msBeforeNext).toBeGreaterThan(0);
    expect(over.msBeforeNext).toBeLessThanOrEqual(60_000);
    // The refused reservation counted nothing: one more recipient still fits.
    expect(await quota.reserve(p, 1)).toEqual({ ok: true });
    const usage = await quota.usage(p);
    expect(usage.perMinute).toMatchObject({ used: 3, limit: 3 });
    expect(usage.daily).toMatchObject({ used: 3, limit: 100 });
    expect(usage.perMinute.resetsAt).toBeInstanceOf(Date);
  });

  it("refuses on the daily window too", async () => {
    const quota = createProjectQuota(ctx.redis, ctx.redisKeyPrefix);
    const p = project(100, 2);
    expect(await quota.reserve(p, 2)).toEqual({ ok: true });
    expect(await quota.reserve(p, 1)).toMatchObject({ ok: false, reason: "exceeded", window: "daily" });
  });

  it("refund gives the recipients back in both windows", async () => {
    const quota = createProjectQuota(ctx.redis, ctx.redisKeyPrefix);
    const p = project(2, 2);
    expect(await quota.reserve(p, 2)).toEqual({ ok: true });
    await quota.refund(p, 2);
    expect((await quota.usage(p)).perMinute.used).toBe(0);
    expect(await quota.reserve(p, 2)).toEqual({ ok: true });
  });

  it("counts the reservations of one turn of the event loop together, judged in order", async () => {
    const prefix = `${ctx.redisKeyPrefix}:turn-${randomUUID()}`;
    const quota = createProjectQuota(ctx.redis, prefix);
    const monitor = await ctx.redis.monitor();
    const scriptCalls: string[][] = [];
    monitor.on("monitor", (_time: string, args: string[]) => {
      const command = args[0]?.toLowerCase();
      if ((command === "evalsha" || command === "eval") && args.some((a) => a.startsWith(prefix)))
        scriptCalls.push(args);
    });
    const busy = project(5, 100);
    const quiet = project(5, 100);
    const outcomes = await Promise.all([
      ...Array.from({ length: 8 }, () => quota.reserve(busy, 1)),
      quota.reserve(quiet, 2),
    ]);
    // As if made one after another: the first five fit the minute window, the other three do
    // not and count nothing; another project's reservation is counted on its own.
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, true, true, true, false, false, false, true]);
    expect(outcomes[5]).toMatchObject({ ok: false, reason: "exceeded", window: "perMinute", limit: 5 });
    expect((await quota.usage(busy)).perMinute.used).toBe(5);
    expect((await quota.usage(quiet)).perMinute.used).toBe(2);
    // Per project one script call per window to count the turn's recipients; for the busy one,
    // one per window more to give back the three refused. A call per reservation would be 22.
    await new Promise((resolve) => setTimeout(resolve, 50));
    monitor.disconnect();
    expect(scriptCalls.filter((args) => args.some((a) => a.endsWith(busy.id)))).toHaveLength(4);
    expect(scriptCalls.filter((args) => args.some((a) => a.endsWith(quiet.id)))).toHaveLength(2);
  });

  it("reports an empty window with no reset time", async () => {
    const quota = createProjectQuota(ctx.redis, ctx.redisKeyPrefix);
    const usage = await quota.usage(project(5, 10));
    expect(usage).toEqual({
      perMinute: { used: 0, limit: 5, resetsAt: null },
      daily: { used: 0, limit: 10, resetsAt: null },
    });
  });

  it("is unavailable, never ok, when Redis does not answer", async () => {
    const dead = createRedis("redis://127.0.0.1:1", { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    dead.on("error", () => {});
    const quota = createProjectQuota(dead, ctx.redisKeyPrefix);
    expect(await quota.reserve(project(5, 10), 1)).toMatchObject({ ok: false, reason: "unavailable" });
    dead.disconnect();
  });
});
