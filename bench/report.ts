/** The benchmark's results: one JSON document per run, and the markdown table in docs/benchmarks.md. */
import { type LatencySummary, ratePerSecond, summarizeLatencies } from "./latency";
import type { PeerName } from "./peers";
import type { Arrival, LoadResult } from "./protocol";

export interface ScenarioResult {
  scenario: string;
  durationS: number;
  accepted: number;
  /** Undefined for the single-message scenario, where a rate means nothing. */
  acceptedPerSecond: number | undefined;
  /** Arrivals at the sink during the load window, per second; undefined for AUTH-only scenarios. */
  deliveredPerSecond: number | undefined;
  /** Accepted but not yet at the sink when the load stopped. */
  backlogAtEnd: number | undefined;
  /** Arrivals at the sink in all, the drain after the window included. */
  delivered: number | undefined;
  errors: number;
  errorSamples: string[];
  acceptLatencyMs: LatencySummary;
  arrivalLatencyMs: LatencySummary | undefined;
  /** Cores used over the load window, per process group. */
  cpuCores: Record<string, number>;
  peakRssBytes: Record<string, number>;
  /** RSS of the same processes when the scenario started, to see growth (25 MB message). */
  startRssBytes: Record<string, number>;
}

/**
 * Rates are taken over the window after a warm-up (10% of the run, at most 2 s: connections,
 * TLS sessions, Postfix's smtpd processes and JIT warm up there); latencies cover every message.
 * `arrivals` is undefined for scenarios that deliver nothing (AUTH only); `rates` false for the
 * single-message scenario.
 */
export function summarize(
  scenario: string,
  result: LoadResult,
  arrivals: Arrival[] | undefined,
  resources: Pick<ScenarioResult, "cpuCores" | "peakRssBytes" | "startRssBytes">,
  rates = true,
): ScenarioResult {
  const from = result.startedAt + Math.min(2000, 0.1 * (result.endedAt - result.startedAt));
  const to = result.endedAt;
  const arrivedInWindow = arrivals?.filter((a) => a.arrivedAt <= to).length ?? 0;
  return {
    scenario,
    durationS: (to - result.startedAt) / 1000,
    accepted: result.accepted.length,
    acceptedPerSecond: !rates
      ? undefined
      : ratePerSecond(
          result.accepted.map((r) => r.acceptedAt),
          from,
          to,
        ),
    deliveredPerSecond:
      arrivals && rates
        ? ratePerSecond(
            arrivals.map((a) => a.arrivedAt),
            from,
            to,
          )
        : undefined,
    backlogAtEnd: arrivals && rates ? result.accepted.length - arrivedInWindow : undefined,
    delivered: arrivals?.length,
    errors: result.errors,
    errorSamples: result.errorSamples,
    acceptLatencyMs: summarizeLatencies(result.accepted.map((r) => r.acceptedAt - r.startedAt)),
    arrivalLatencyMs: arrivals
      ? summarizeLatencies(arrivals.flatMap((a) => (a.sentAt === undefined ? [] : [a.arrivedAt - a.sentAt])))
      : undefined,
    ...resources,
  };
}

export type ScenarioOutcome = ScenarioResult | { scenario: string; skipped: string };

export interface PeerReport {
  version: Record<string, string>;
  scenarios: ScenarioOutcome[];
  error?: string;
}

export interface StatsEndpointReport {
  seededMessages: number;
  seedSeconds: number;
  latencyMs?: LatencySummary;
  skipped?: string;
}

export interface BenchReport {
  startedAt: string;
  machine: Record<string, string | number>;
  options: Record<string, unknown>;
  peers: Partial<Record<PeerName, PeerReport>>;
  stats?: StatsEndpointReport;
}

export const markers = { start: "<!-- bench:results:start -->", end: "<!-- bench:results:end -->" };

/** Replaces what stands between the markers (appending a marked section when there is none). */
export function replaceBetweenMarkers(document: string, content: string): string {
  const block = `${markers.start}\n${content.trim()}\n${markers.end}`;
  const start = document.indexOf(markers.start);
  const end = document.indexOf(markers.end);
  if (start === -1 || end === -1 || end < start) return `${document.trimEnd()}\n\n${block}\n`;
  return document.slice(0, start) + block + document.slice(end + markers.end.length);
}

const isResult = (o: ScenarioOutcome | undefined): o is ScenarioResult =>
  o !== undefined && !("skipped" in o);
const n0 = (v: number | undefined) =>
  v === undefined || Number.isNaN(v) ? "–" : Math.round(v).toLocaleString("en");
const ms = (l: LatencySummary | undefined) =>
  l && l.count > 0 ? `${n0(l.p50)} / ${n0(l.p95)} / ${n0(l.p99)}` : "–";
const mb = (bytes: number | undefined) => (bytes === undefined ? "–" : `${Math.round(bytes / 2 ** 20)}`);
const cores = (c: Record<string, number>) =>
  Object.entries(c)
    .map(([name, value]) => `${name} ${value.toFixed(2)}`)
    .join(", ");

function peerTable(peer: PeerReport): string {
  const rows = [
    "| scenario | accepted/s | delivered/s | backlog at end | accept ms p50 / p95 / p99 | send→arrival ms p50 / p95 / p99 | peak RSS MB | CPU cores | errors |",
    "|---|--:|--:|--:|--:|--:|--:|---|--:|",
  ];
  for (const outcome of peer.scenarios) {
    if (!isResult(outcome)) {
      rows.push(`| ${outcome.scenario} | skipped: ${outcome.skipped} ||||||||`);
      continue;
    }
    const rss = Object.entries(outcome.peakRssBytes)
      .map(([name, peak]) => `${mb(peak)} (from ${mb(outcome.startRssBytes[name])})`)
      .join(", ");
    rows.push(
      `| ${outcome.scenario} | ${n0(outcome.acceptedPerSecond)} | ${n0(outcome.deliveredPerSecond)} | ${n0(outcome.backlogAtEnd)} | ${ms(outcome.acceptLatencyMs)} | ${ms(outcome.arrivalLatencyMs)} | ${rss || "–"} | ${cores(outcome.cpuCores)} | ${outcome.errors} |`,
    );
  }
  return rows.join("\n");
}

const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || !b ? "–" : `${(a / b).toFixed(2)}×`;

function ratioTable(postern: PeerReport, postfix: PeerReport): string {
  const rows = [
    "| scenario | accepted/s Postern / Postfix | delivered/s Postern / Postfix | send→arrival p99 Postfix / Postern |",
    "|---|--:|--:|--:|",
  ];
  for (const ours of postern.scenarios) {
    const theirs = postfix.scenarios.find((s) => s.scenario === ours.scenario);
    if (!isResult(ours) || !isResult(theirs)) continue;
    rows.push(
      `| ${ours.scenario} | ${ratio(ours.acceptedPerSecond, theirs.acceptedPerSecond)} | ${ratio(ours.deliveredPerSecond, theirs.deliveredPerSecond)} | ${ratio(theirs.arrivalLatencyMs?.p99, ours.arrivalLatencyMs?.p99)} |`,
    );
  }
  return rows.join("\n");
}

const titles: Record<PeerName, string> = {
  ceiling: "Ceiling: the load generator straight into the sink (no relay, no TLS, no AUTH)",
  postfix: "Postfix",
  postern: "Postern",
};

export function renderMarkdown(report: BenchReport): string {
  const { machine } = report;
  const parts = [
    `Run of ${report.startedAt}: ${machine.cpuCount} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.os}; ` +
      Object.entries(machine)
        .filter(([key]) => !["cpuCount", "cpuModel", "memoryGiB", "os"].includes(key))
        .map(([key, value]) => `${key} ${value}`)
        .join(", ") +
      `. Options: ${JSON.stringify(report.options)}.`,
  ];
  const { postern, postfix } = report.peers;
  if (postern && postfix && !postern.error && !postfix.error) {
    parts.push("### Postern / Postfix", ratioTable(postern, postfix));
  }
  for (const [name, peer] of Object.entries(report.peers)) {
    parts.push(`### ${titles[name as PeerName]}`);
    parts.push(peer.error ? `Not measured: ${peer.error}` : peerTable(peer));
  }
  if (report.stats) {
    const { stats } = report;
    parts.push(
      "### Stats endpoint",
      stats.skipped
        ? `Not measured: ${stats.skipped}`
        : `\`GET /v1/stats\` with ${stats.seededMessages.toLocaleString("en")} messages stored (seeded in ${stats.seedSeconds.toFixed(1)} s): p50 / p95 / p99 ${ms(stats.latencyMs)} ms.`,
    );
  }
  return parts.join("\n\n");
}
