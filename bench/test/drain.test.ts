import { describe, expect, it } from "vitest";
import { drain } from "../drain";
import type { Arrival, LoadResult } from "../protocol";

describe("drain", () => {
  it("takes a collect of 200,000 arrivals at once (a 60 s ceiling run) and keeps this scenario's", async () => {
    const startedAt = 1_000_000;
    const arrivals: Arrival[] = Array.from({ length: 200_000 }, (_, i) => ({
      sentAt: startedAt + i,
      arrivedAt: startedAt + i + 5,
    }));
    const stragglers: Arrival[] = [
      { sentAt: startedAt - 1, arrivedAt: startedAt },
      { sentAt: undefined, arrivedAt: startedAt },
    ];
    const sink = { collect: async () => [...stragglers, ...arrivals] };
    const result = {
      startedAt,
      accepted: arrivals.map((a) => ({ startedAt: a.sentAt as number, acceptedAt: a.arrivedAt })),
    } as unknown as LoadResult;
    const drained = await drain(sink, result, 1000);
    expect(drained).toHaveLength(200_000);
    expect(drained[0]).toEqual(arrivals[0]);
  });
});
