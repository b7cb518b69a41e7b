import type { Sink } from "./children";
import type { Arrival, LoadResult } from "./protocol";

/** Collects arrivals until every accepted message has arrived at the sink, or the time is up. */
export async function drain(
  sink: Pick<Sink, "collect">,
  result: LoadResult,
  timeoutMs: number,
): Promise<Arrival[]> {
  const arrivals: Arrival[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // One by one: a 60 s ceiling run collects 140,000 arrivals at once, more arguments than a
    // spread call may take (V8's stack).
    for (const arrival of await sink.collect())
      if (arrival.sentAt !== undefined && arrival.sentAt >= result.startedAt) arrivals.push(arrival);
    if (arrivals.length >= result.accepted.length || Date.now() > deadline) return arrivals;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
