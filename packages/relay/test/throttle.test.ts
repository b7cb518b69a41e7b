import { createRedis, type Redis } from "@postern/queue";
import { DestinationThrottle, signalOf } from "@postern/relay";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";

/**
 * DestinationThrottle against the run's real Redis, on a clock of the test's own (no sleeping):
 * two instances stand for two worker processes sharing the caps.
 */

let redis: Redis;
let prefix: string;
let clock = 1_000_000;
const throttles: DestinationThrottle[] = [];

beforeAll(() => {
  redis = createRedis(inject("redisUrl"));
});
afterAll(async () => {
  await redis.quit();
});
afterEach(async () => {
  for (const throttle of throttles.splice(0)) throttle.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
});

function worker(options: { leaseTtlMs?: number } = {}) {
  const throttle = new DestinationThrottle(redis, prefix, { ceiling: 30, now: () => clock, ...options });
  throttles.push(throttle);
  return throttle;
}

async function lease(throttle: DestinationThrottle, destination: string, concurrency: number, rate = 0) {
  const admission = await throttle.admit(destination, { concurrency, ratePerMinute: rate });
  if (admission.kind !== "admitted") throw new Error(`${destination}: ${admission.reason}`);
  return admission.lease;
}

describe("DestinationThrottle", () => {
  it("admits at most the cap in flight across workers, and again once one is given back", async () => {
    prefix = `throttle-test-${Math.random().toString(36).slice(2)}`;
    const [a, b] = [worker(), worker()];
    const first = await lease(a, "d.example", 2);
    await lease(b, "d.example", 2);
    expect(await b.admit("d.example", { concurrency: 2, ratePerMinute: 0 })).toEqual({
      kind: "throttled",
      reason: "destination_busy",
      retryInMs: 2_000,
      limit: 2,
    });
    // The more deliveries wait for the destination, the further apart they come back: a second
    // per limit's worth refused in the last 10 s (here 60), 30 s at most.
    for (let i = 0; i < 58; i++) await b.admit("d.example", { concurrency: 2, ratePerMinute: 0 });
    expect(await b.admit("d.example", { concurrency: 2, ratePerMinute: 0 })).toMatchObject({
      retryInMs: 30_000,
    });
    // Another destination is counted apart.
    await lease(a, "other.example", 2);
    await a.settle(first, "accepted");
    await lease(b, "d.example", 2);
  });

  it("frees the slots of a worker that died once their leases expire", async () => {
    prefix = `throttle-test-${Math.random().toString(36).slice(2)}`;
    const dead = worker({ leaseTtlMs: 60_000 });
    await lease(dead, "d.example", 1);
    const alive = worker();
    expect((await alive.admit("d.example", { concurrency: 1, ratePerMinute: 0 })).kind).toBe("throttled");
    clock += 60_001;
    await lease(alive, "d.example", 1);
  });

  it("halves the limit on a push-back (once per round), with a floor of 1, and raises it back by one per limit successes", async () => {
    prefix = `throttle-test-${Math.random().toString(36).slice(2)}`;
    const throttle = worker();
    const early = await lease(throttle, "d.example", 8);
    clock += 1;
    const pushed = await lease(throttle, "d.example", 8);
    await throttle.settle(pushed, "pushed_back");
    expect(await throttle.loweredLimits()).toEqual(new Map([["d.example", 4]]));
    // Started before the halving: sent under the old limit, it does not halve it again.
    await throttle.settle(early, "pushed_back");
    expect((await throttle.loweredLimits()).get("d.example")).toBe(4);
    for (const expected of [2, 1, 1]) {
      clock += 1;
      await throttle.settle(await lease(throttle, "d.example", 8), "pushed_back");
      expect((await throttle.loweredLimits()).get("d.example")).toBe(expected);
    }
    // 1 success → 2, 2 more → 3, ... 7 more → 8, the cap: no longer lowered.
    const raised: number[] = [];
    for (let i = 0; i < 1 + 2 + 3 + 4 + 5 + 6 + 7; i++) {
      await throttle.settle(await lease(throttle, "d.example", 8), "accepted");
      raised.push((await throttle.loweredLimits()).get("d.example") ?? 8);
    }
    expect(raised.slice(0, 4)).toEqual([2, 2, 3, 3]);
    expect(raised.at(-2)).toBe(7);
    expect(await throttle.loweredLimits()).toEqual(new Map());
  });

  it("lowers a destination without a cap from the ceiling, shared with every worker", async () => {
    prefix = `throttle-test-${Math.random().toString(36).slice(2)}`;
    const [a, b] = [worker(), worker()];
    const free = await lease(a, "smarthost:25", 0);
    expect(free.id).toBeUndefined();
    await a.settle(free, "pushed_back");
    expect(await b.loweredLimits()).toEqual(new Map([["smarthost:25", 15]]));
    // Lowered: b now counts its deliveries in Redis, up to 15.
    const counted = await lease(b, "smarthost:25", 0);
    expect(counted.id).toBeDefined();
  });

  it("starts at most the rate per minute, and says when the next may start", async () => {
    prefix = `throttle-test-${Math.random().toString(36).slice(2)}`;
    const throttle = worker();
    await lease(throttle, "r.example", 0, 2);
    clock += 10_000;
    await lease(throttle, "r.example", 0, 2);
    expect(await throttle.admit("r.example", { concurrency: 0, ratePerMinute: 2 })).toEqual({
      kind: "throttled",
      reason: "destination_rate",
      retryInMs: 50_000,
      limit: 2,
    });
    clock += 50_000;
    await lease(throttle, "r.example", 0, 2);
  });

  it("reads 421 and 4.7.x as a push-back, a delivery as accepted", () => {
    const verdict = (outcome: string, code: number | null, enhancedCode: string | null = null) => ({
      outcome,
      code,
      enhancedCode,
    });
    expect(signalOf([verdict("deferred", 421, "4.3.2")])).toBe("pushed_back");
    expect(signalOf([verdict("deferred", 451, "4.7.500")])).toBe("pushed_back");
    expect(signalOf([verdict("deferred", 450, "4.2.1")])).toBe("neutral");
    expect(signalOf([verdict("failed", 550, "5.7.1")])).toBe("neutral");
    expect(signalOf([verdict("delivered", 250)])).toBe("accepted");
  });
});
