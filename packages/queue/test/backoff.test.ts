import { retryDelayMs } from "@postern/queue";
import { describe, expect, it } from "vitest";

describe("retryDelayMs", () => {
  const backoff = [60, 300, 900];
  it("takes the n-th value after n attempts, and repeats the last one", () => {
    const noJitter = () => 0.5;
    expect(retryDelayMs(1, backoff, noJitter)).toBe(60_000);
    expect(retryDelayMs(2, backoff, noJitter)).toBe(300_000);
    expect(retryDelayMs(3, backoff, noJitter)).toBe(900_000);
    expect(retryDelayMs(12, backoff, noJitter)).toBe(900_000);
  });
  it("adds at most ±10% jitter", () => {
    expect(retryDelayMs(1, backoff, () => 0)).toBe(54_000);
    expect(retryDelayMs(1, backoff, () => 0.999999)).toBeLessThanOrEqual(66_000);
  });
});
