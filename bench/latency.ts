/** Latency and rate summaries of one scenario. */

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile (the value at rank ⌈p/100 · n⌉ of the sorted samples); p in (0, 100]. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export function summarizeLatencies(samplesMs: readonly number[]): LatencySummary {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
  };
}

/** Events per second of the timestamps (ms) that fall inside [fromMs, toMs]. */
export function ratePerSecond(timestampsMs: readonly number[], fromMs: number, toMs: number): number {
  if (toMs <= fromMs) return 0;
  let n = 0;
  for (const t of timestampsMs) if (t >= fromMs && t <= toMs) n++;
  return n / ((toMs - fromMs) / 1000);
}
