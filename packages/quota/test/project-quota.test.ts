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
