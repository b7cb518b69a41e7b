import { describe, expect, it } from "vitest";
import { UpstreamCircuits } from "../src/circuit";

function circuits() {
  let now = 1_000_000;
  const breaker = new UpstreamCircuits({
    failureThreshold: 3,
    cooldownMs: 60_000,
    probeTimeoutMs: 30_000,
    now: () => now,
  });
  return { breaker, advance: (ms: number) => (now += ms) };
}

describe("UpstreamCircuits", () => {
  it("opens after the threshold of failures in a row, and a success in between starts the count again", () => {
    const { breaker } = circuits();
    breaker.connectFailed("mx:25", "Greeting never received");
    breaker.connectFailed("mx:25", "Greeting never received");
    breaker.connected("mx:25");
    breaker.connectFailed("mx:25", "Greeting never received");
    breaker.connectFailed("mx:25", "Greeting never received");
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: false });
    breaker.connectFailed("mx:25", "Greeting never received");
    const admission = breaker.admit("mx:25");
    expect(admission.kind).toBe("suspended");
    if (admission.kind === "suspended")
      expect(admission.reason).toMatch(
        /^delivery temporarily suspended: mx:25 failed to take a connection 3 times in a row \(last: Greeting never received\); it is tried again after /,
      );
    // Another upstream is not affected.
    expect(breaker.admit("other:25")).toEqual({ kind: "allowed", probe: false });
    expect(breaker.suspendedCount()).toBe(1);
  });

  it("lets one probe through after the cool-down; its failure reopens, its success closes", () => {
    const { breaker, advance } = circuits();
    for (let i = 0; i < 3; i++) breaker.connectFailed("mx:25", "connect ECONNREFUSED");
    advance(59_000);
    expect(breaker.admit("mx:25").kind).toBe("suspended");
    advance(1_000);
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: true });
    // While the probe is out, the others wait for it.
    expect(breaker.admit("mx:25")).toEqual({ kind: "probing", probeEndsBy: 1_060_000 + 30_000 });
    breaker.connectFailed("mx:25", "connect ECONNREFUSED");
    expect(breaker.admit("mx:25").kind).toBe("suspended");
    advance(60_000);
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: true });
    breaker.connected("mx:25");
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: false });
    expect(breaker.suspendedCount()).toBe(0);
  });

  it("a probe that ended without reaching the upstream hands the probe to the next delivery", () => {
    const { breaker, advance } = circuits();
    for (let i = 0; i < 3; i++) breaker.connectFailed("mx:25", "connect ETIMEDOUT");
    advance(60_000);
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: true });
    breaker.probeEnded("mx:25", undefined);
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: true });
    breaker.probeEnded("mx:25", true);
    expect(breaker.admit("mx:25")).toEqual({ kind: "allowed", probe: false });
  });
});
