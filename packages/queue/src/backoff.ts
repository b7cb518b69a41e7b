/**
 * Delay before attempt `attemptsMade + 1` of a deferred message: the `attemptsMade`-th value of
 * DELIVERY_BACKOFF (seconds; the last value repeats), with ±10% jitter so that messages deferred
 * together by one upstream outage do not all come back in the same second.
 */
export function retryDelayMs(
  attemptsMade: number,
  backoffSeconds: number[],
  random: () => number = Math.random,
): number {
  const index = Math.min(Math.max(attemptsMade, 1), backoffSeconds.length) - 1;
  const base = (backoffSeconds[index] ?? 60) * 1000;
  const jitter = 1 + (random() * 2 - 1) * 0.1;
  return Math.round(base * jitter);
}
