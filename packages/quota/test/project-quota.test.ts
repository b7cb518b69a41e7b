import { randomUUID } from "node:crypto";
import { createRedis } from "@postern/queue";
import {
  createProjectQuota,
  type ProjectQuota,
  type QuotaProject,
  type QuotaReservation,
} from "@postern/quota";
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

  describe("counting ahead for a busy project", () => {
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    /** Reservations of one recipient, `perTurn` in each turn, a turn every 5 ms, as a busy SMTP process makes them. */
    const load = async (quota: ProjectQuota, p: QuotaProject, turns: number, perTurn: number) => {
      const outcomes: QuotaReservation[] = [];
      for (let turn = 0; turn < turns; turn++) {
        outcomes.push(...(await Promise.all(Array.from({ length: perTurn }, () => quota.reserve(p, 1)))));
        await sleep(5);
      }
      return outcomes;
    };
    /** Script calls that counted recipients for the project (rate-limiter-flexible's penalty and reward are scripts). */
    const countCalls = async (projectId: string, work: () => Promise<void>) => {
      const monitor = await ctx.redis.monitor();
      let calls = 0;
      monitor.on("monitor", (_time: string, args: string[]) => {
        const command = args[0]?.toLowerCase();
        if ((command === "evalsha" || command === "eval") && args.some((a) => a.endsWith(projectId))) calls++;
      });
      await work();
      await sleep(50);
      monitor.disconnect();
      return calls;
    };

    it("answers most reservations from credit, and gives the unused credit back once the project is quiet", async () => {
      const quota = createProjectQuota(ctx.redis, `${ctx.redisKeyPrefix}:ahead-${randomUUID()}`, {
        idleMs: 300,
      });
      const p = project(100_000, 1_000_000);
      // The demand is that of the last full 100 ms: the first turns are counted as they come.
      let outcomes = await load(quota, p, 30, 4);
      const calls = await countCalls(p.id, async () => {
        outcomes = outcomes.concat(await load(quota, p, 50, 4));
      });
      expect(outcomes).toHaveLength(320);
      expect(outcomes.every((o) => o.ok)).toBe(true);
      // Counted one turn at a time, the 50 turns would cost 50 counts of two calls each.
      expect(calls).toBeLessThan(30);
      const busy = await quota.usage(p);
      expect(busy.perMinute.used).toBeGreaterThan(320);
      await sleep(800);
      expect((await quota.usage(p)).perMinute.used).toBe(320);
      expect((await quota.usage(p)).daily.used).toBe(320);
    });

    it("never counts ahead past the limit, and hands what it held to another process once quiet", async () => {
      const prefix = `${ctx.redisKeyPrefix}:ahead-${randomUUID()}`;
      const first = createProjectQuota(ctx.redis, prefix, { idleMs: 300 });
      const second = createProjectQuota(ctx.redis, prefix, { idleMs: 300 });
      const p = project(100, 10_000);
      const outcomes = await load(first, p, 24, 4);
      expect(outcomes.every((o) => o.ok)).toBe(true);
      // 96 sent; the process holds credit for some of the last 4 (at most a twentieth of 100).
      const held = (await first.usage(p)).perMinute.used;
      expect(held).toBeGreaterThan(96);
      expect(held).toBeLessThanOrEqual(100);
      expect(await second.reserve(p, 4)).toMatchObject({
        ok: false,
        reason: "exceeded",
        window: "perMinute",
      });
      await sleep(800);
      expect((await first.usage(p)).perMinute.used).toBe(96);
      expect(await second.reserve(p, 4)).toEqual({ ok: true });
      expect(await second.reserve(p, 1)).toMatchObject({ ok: false, reason: "exceeded" });
      expect(await first.reserve(p, 1)).toMatchObject({ ok: false, reason: "exceeded" });
      expect((await first.usage(p)).perMinute.used).toBe(100);
    });

    it("never spends credit after its window ends, nor gives it back into the next window", async () => {
      const prefix = `${ctx.redisKeyPrefix}:ahead-${randomUUID()}`;
      const quota = createProjectQuota(ctx.redis, prefix, { idleMs: 10_000 });
      const p = project(100_000, 1_000_000);
      expect(await quota.reserve(p, 1)).toEqual({ ok: true });
      // The minute window now ends in 3 s: credit counted from here is spendable for 1 s.
      await ctx.redis.pexpire(`${prefix}:quota:perMinute:${p.id}`, 3_000);
      await load(quota, p, 30, 4);
      expect((await quota.usage(p)).perMinute.used).toBeGreaterThan(121);
      await sleep(3_200);
      // A new window: it counts what was reserved in it, nothing from the last one's credit.
      const calls = await countCalls(p.id, async () => {
        expect(await quota.reserve(p, 1)).toEqual({ ok: true });
      });
      expect(calls).toBeGreaterThan(0);
      expect((await quota.usage(p)).perMinute.used).toBe(1);
      expect((await quota.usage(p)).daily.used).toBe(122);
      await quota.close();
    });

    it("gives the credit back at close", async () => {
      const quota = createProjectQuota(ctx.redis, `${ctx.redisKeyPrefix}:ahead-${randomUUID()}`, {
        idleMs: 10_000,
      });
      const p = project(100_000, 1_000_000);
      await load(quota, p, 20, 4);
      expect((await quota.usage(p)).perMinute.used).toBeGreaterThan(80);
      await quota.close();
      expect((await quota.usage(p)).perMinute).toMatchObject({ used: 80 });
      expect((await quota.usage(p)).daily).toMatchObject({ used: 80 });
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
