/**
 * `npm run bench`: Postern all-in-one (and, with `--peer postfix,postfix-tuned,forwarder`, a
 * private Postfix with stock and with tuned concurrency and the libraries' floor,
 * bench/forwarder.ts) between a load generator and an upstream sink, each in its own process. See
 * docs/benchmarks.md.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Rule } from "@postern/rules";
import { Command, InvalidArgumentError } from "commander";
import { LoadGenerator, Sink } from "./children";
import { drain } from "./drain";
import { summarizeLatencies } from "./latency";
import {
  ceiling,
  type Peer,
  type PeerName,
  type PosternPeer,
  startForwarder,
  startPostern,
  startPostfix,
} from "./peers";
import { peakRss, resetPeakRss, startCpuWindow } from "./procstat";
import { summarizeProfiles } from "./profile";
import type { Arrival, LoadResult, LoadSpec } from "./protocol";
import {
  type BenchReport,
  type PeerReport,
  renderMarkdown,
  replaceBetweenMarkers,
  type ScenarioOutcome,
  type ScenarioResult,
  stuckNeighbourRows,
  summarize,
  type WebhookResult,
} from "./report";
import { benchRules } from "./rules";
import { startSilentUpstream } from "./silent-upstream";
import { measureStatsEndpoint } from "./stats";
import { type BenchReceiver, startBenchReceiver } from "./webhook-receiver";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const KiB = 1024;
const MiB = 1024 * KiB;

interface Scenario {
  mode: LoadSpec["mode"];
  concurrency: number;
  messageBytes: number;
  maxMessages?: number;
  /** Open loop at this many messages per second (see `fixedRate`). */
  fixedRate?: boolean;
  /** Open loop at this rate, whatever `--rate` says. */
  ratePerSecond?: number;
  /**
   * A second project that sends at this rate, over this many connections, to an upstream that
   * accepts TCP and never answers (`runStuckNeighbour`).
   */
  stuckNeighbour?: { ratePerSecond: number; concurrency: number };
  /** Every message DKIM-signed at delivery (RSA-2048) with a key of the sender's domain. */
  dkim?: boolean;
  /** Every message delivered directly: the sink found as the MX host of the recipients' domain. */
  direct?: boolean;
  /** AUTH scenarios: which logins (one reused login = the cached path). */
  logins?: "same" | "fresh";
  /** The load goes to a project of its own with these rules (bench/rules.ts). */
  rules?: Rule[];
  /**
   * Every event type of the main project POSTed to a local receiver answering 204
   * (bench/webhook-receiver.ts); the drain waits until each event is acknowledged.
   */
  webhooks?: boolean;
  what: string;
}

/** The scenarios, in the order they run. docs/benchmarks.md explains each. */
const scenarios: Record<string, Scenario> = {
  "pooled-10k": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    what: "50 persistent connections",
  },
  // Right after pooled-10k, so that the two are measured minutes apart on the same machine.
  "pooled-10k-rules": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    rules: benchRules,
    what: "as pooled-10k, to a project with 20 rules (envelope, header, size and attachment conditions)",
  },
  "pooled-10k-dkim": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    dkim: true,
    what: "as pooled-10k, every message DKIM-signed (RSA-2048) at delivery",
  },
  "pooled-10k-direct": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    direct: true,
    what: "as pooled-10k, every message delivered directly to the recipients' MX host (the sink)",
  },
  "pooled-10k-webhooks": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    webhooks: true,
    what: "as pooled-10k, every event type of the project POSTed (signed) to a local webhook receiver",
  },
  "http-10k": {
    mode: "http",
    concurrency: 50,
    messageBytes: 10 * KiB,
    what: "50 keep-alive HTTP clients, JSON to POST /v1/messages",
  },
  "fresh-10k": {
    mode: "fresh",
    concurrency: 20,
    messageBytes: 10 * KiB,
    what: "20 clients, new connection each",
  },
  "pooled-1m": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: MiB,
    what: "50 persistent connections, 1 MiB",
  },
  "single-25m": {
    mode: "pooled",
    concurrency: 1,
    messageBytes: 25 * 1000 * 1000,
    maxMessages: 1,
    what: "one 25 MB message",
  },
  "fixed-rate": {
    mode: "pooled",
    concurrency: 50,
    messageBytes: 10 * KiB,
    fixedRate: true,
    what: "open loop at Postfix's pooled delivered rate",
  },
  "auth-cached": {
    mode: "auth",
    concurrency: 20,
    messageBytes: 0,
    logins: "same",
    what: "AUTH, same credential",
  },
  "auth-bcrypt": {
    mode: "auth",
    concurrency: 20,
    messageBytes: 0,
    logins: "fresh",
    what: "AUTH, a new credential each",
  },
  // Last: project B's messages stay queued for its stuck upstream after the scenario.
  "stuck-neighbour": {
    mode: "pooled",
    concurrency: 20,
    messageBytes: 10 * KiB,
    ratePerSecond: 20,
    stuckNeighbour: { ratePerSecond: 5, concurrency: 10 },
    what: "project A at 20/s, alone and then while project B sends 5/s to an upstream that never answers",
  },
};

/**
 * How long project B of `stuck-neighbour` sends before A's second run starts (at most the
 * duration): at 5 a second, 50 messages, as many as a worker's delivery slots by default, so that
 * A is measured once a stuck neighbour's deliveries can have taken every slot they are let have.
 */
const neighbourLeadMs = 10_000;

/** Postfix's pooled delivered rate in the reference run of issue 6; used when Postfix is not measured. */
const referencePostfixRate = 278;

/** Relays `--peer` adds beside Postern, in the order they are measured (before Postern). */
const optionalPeers = ["postfix", "postfix-tuned", "forwarder"] as const;
type OptionalPeer = (typeof optionalPeers)[number];

interface Options {
  peers: OptionalPeer[];
  scenarios: string[];
  duration: number;
  seedMessages: number;
  quick: boolean;
  rate?: number;
  /** Re-render docs/benchmarks.md from an earlier run's JSON instead of measuring. */
  render?: string;
  /** Run Postern under `node --cpu-prof` and list its hottest functions. */
  profile: boolean;
  /** Postern's roles in processes of their own: `start api`, `smtpProcesses` × `start smtp`, `workerProcesses` × `start worker`. */
  splitRoles: boolean;
  smtpProcesses: number;
  workerProcesses: number;
  /** Seconds of unmeasured load, of each of two kinds, before a relay's first scenario. */
  warmup: number;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("must be a number greater than 0");
  return n;
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a whole number greater than 0");
  return n;
}

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("must be a number, 0 or more");
  return n;
}

function parseOptions(argv: string[]): Options {
  const program = new Command("bench")
    .description("Benchmark Postern end to end (and a private Postfix with --peer postfix)")
    .option("--peer <list>", `also measure these relays, comma-separated: ${optionalPeers.join(", ")}`)
    .option("--scenarios <list>", `comma-separated, from: ${Object.keys(scenarios).join(", ")}`)
    .option("--duration <seconds>", "load time per scenario", positiveNumber, 20)
    .option(
      "--seed-messages <n>",
      "store this many messages, then time GET /v1/stats and the dashboard messages page's first data",
      (v) => Math.floor(positiveNumber(v)),
      0,
    )
    .option(
      "--rate <perSecond>",
      "rate of the fixed-rate scenario (default: Postfix's pooled delivered rate)",
      positiveNumber,
    )
    .option(
      "--warmup <seconds>",
      "unmeasured pooled and fresh load before each relay's first scenario, seconds of each (0: none)",
      nonNegativeNumber,
      5,
    )
    .option("--quick", "a smoke run: 3 s per scenario, 1 s of warm-up", false)
    .option("--render <json>", "write docs/benchmarks.md from the results of an earlier run, measure nothing")
    .option("--profile", "run Postern under node --cpu-prof and list where its CPU went", false)
    .option(
      "--split-roles",
      "run Postern's roles in processes of their own: the API, SMTP and delivery worker processes",
      false,
    )
    .option("--smtp-processes <n>", "SMTP processes of --split-roles (implies it)", positiveInteger, 1)
    .option(
      "--worker-processes <n>",
      "delivery worker processes of --split-roles (implies it)",
      positiveInteger,
      1,
    )
    .parse(argv);
  const { peer, ...raw } = program.opts<
    Omit<Options, "scenarios" | "peers"> & { scenarios?: string; peer?: string }
  >();
  // Asking for a number of processes is asking for the roles to be split.
  const processesGiven = ["smtpProcesses", "workerProcesses"].some(
    (name) => program.getOptionValueSource(name) === "cli",
  );
  const peers = peer ? peer.split(",").map((p) => p.trim()) : [];
  const unknownPeers = peers.filter((p) => !optionalPeers.includes(p as OptionalPeer));
  if (unknownPeers.length > 0)
    program.error(`--peer: unknown ${unknownPeers.join(", ")} (known: ${optionalPeers.join(", ")})`);
  const selected = raw.scenarios ? raw.scenarios.split(",").map((s) => s.trim()) : Object.keys(scenarios);
  const unknown = selected.filter((s) => !(s in scenarios));
  if (unknown.length > 0)
    program.error(`--scenarios: unknown ${unknown.join(", ")} (known: ${Object.keys(scenarios).join(", ")})`);
  return {
    ...raw,
    peers: optionalPeers.filter((p) => peers.includes(p)),
    scenarios: selected,
    splitRoles: raw.splitRoles || processesGiven,
    duration: raw.quick ? Math.min(raw.duration, 3) : raw.duration,
    warmup: raw.quick ? Math.min(raw.warmup, 1) : raw.warmup,
  };
}

/** The domain of every message's sender (envelope and From header). */
const domainOfSender = "bench.example";
/** The domain of every message's recipient; the bench's DNS names the sink its MX host. */
const domainOfRecipient = "bench.example";

function loadSpecOf(scenario: Scenario, peer: Peer, durationMs: number, fixedRate: number): LoadSpec {
  const http = scenario.mode === "http";
  return {
    host: "127.0.0.1",
    ports: http && peer.httpPort !== undefined ? [peer.httpPort] : peer.smtpPorts,
    apiToken: http ? peer.apiToken : undefined,
    mode: scenario.mode,
    concurrency: scenario.concurrency,
    messageBytes: scenario.messageBytes,
    durationMs: scenario.maxMessages ? 300_000 : durationMs,
    maxMessages: scenario.maxMessages,
    ratePerSecond: scenario.ratePerSecond ?? (scenario.fixedRate ? fixedRate : undefined),
    logins: scenario.logins === "fresh" ? peer.freshLogins : peer.login ? [peer.login] : [],
    from: `bench@${domainOfSender}`,
    to: `sink@${domainOfRecipient}`,
  };
}

/**
 * Before its first scenario, each relay carries `--warmup` seconds of the pooled and then of the
 * fresh-connection 10 KiB load, which no figure counts, and delivers all of it. A relay in
 * production has been running: Postern's JIT compiles its hot paths over its first seconds of
 * load (from a cold start, its pooled rate more than tripled over the first eight seconds:
 * docs/benchmarks-history.md, Fourth round), Postfix's master forks its smtpd, cleanup and smtp
 * processes on demand.
 * When `http-10k` is to run on a relay that speaks HTTP, its load warms up the API route as well.
 */
async function warmUp(peer: Peer, sink: Sink, load: LoadGenerator, options: Options): Promise<void> {
  if (options.warmup === 0) return;
  for (const name of warmUpScenarios(peer, options)) {
    const spec = loadSpecOf(scenarios[name] as Scenario, peer, options.warmup * 1000, 0);
    await drain(sink, await load.run(spec), drainTimeoutMs(options));
  }
}

function warmUpScenarios(peer: Peer, options: Options): string[] {
  const http = peer.httpPort !== undefined && options.scenarios.includes("http-10k");
  return ["pooled-10k", "fresh-10k", ...(http ? ["http-10k"] : [])];
}

async function runScenario(
  name: string,
  scenario: Scenario,
  peer: Peer,
  sink: Sink,
  load: LoadGenerator,
  options: Options & { fixedRate: number; receiver?: BenchReceiver },
): Promise<ScenarioResult> {
  const spec = loadSpecOf(scenario, peer, options.duration * 1000, options.fixedRate);
  const rssProcesses = peer.rssProcesses();
  for (const { pid } of rssProcesses) resetPeakRss(pid);
  const startRssBytes = Object.fromEntries(rssProcesses.map(({ name: n, pid }) => [n, peakRss(pid) ?? 0]));
  const groups = [
    ...peer.groups,
    { name: "load", roots: () => [load.process.pid as number] },
    { name: "sink", roots: () => [sink.process.pid as number] },
  ];
  await sink.collect(); // stragglers of earlier scenarios are not this one's
  const cpu = startCpuWindow(groups);
  const result = await load.run(spec);
  const cpuCores = cpu.stop();
  const peakRssBytes = Object.fromEntries(rssProcesses.map(({ name: n, pid }) => [n, peakRss(pid) ?? 0]));

  const delivers = scenario.mode !== "auth";
  const drainStarted = Date.now();
  const arrivals = delivers ? await drain(sink, result, drainTimeoutMs(options)) : [];
  const summary = summarize(
    name,
    result,
    delivers ? arrivals : undefined,
    { cpuCores, peakRssBytes, startRssBytes },
    scenario.maxMessages === undefined,
  );
  if (options.receiver)
    summary.webhooks = await drainWebhooks(
      options.receiver,
      result,
      drainStarted + drainTimeoutMs(options) - Date.now(),
    );
  return summary;
}

/**
 * Waits until the receiver has acknowledged the events of every accepted message (accepted and
 * delivered: two each), or the drain's time is up; then what it got.
 */
async function drainWebhooks(
  receiver: BenchReceiver,
  result: LoadResult,
  timeoutMs: number,
): Promise<WebhookResult> {
  const expected = 2 * result.accepted.length;
  const deadline = Date.now() + Math.max(timeoutMs, 15_000);
  while (receiver.count() < expected && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 200));
  const receipts = receiver.receipts().filter((r) => r.createdAt >= result.startedAt - 1000);
  const last = receipts.reduce((latest, r) => Math.max(latest, r.receivedAt), result.startedAt + 1);
  return {
    expected,
    acknowledged: receipts.length,
    eventsPerSecond: receipts.length / ((last - result.startedAt) / 1000),
    latencyMs: summarizeLatencies(receipts.map((r) => r.receivedAt - r.createdAt)),
  };
}

/**
 * `stuck-neighbour`: project A (the main login, its upstream the sink) at its fixed rate alone, then
 * again while project B, a second project whose upstream accepts TCP and never answers, sends at
 * its own rate, from `neighbourLeadMs` before A's second run to its end. A's two rows are the
 * comparison: a relay that isolates its tenants delivers A as fast beside B as alone.
 */
async function runStuckNeighbour(
  name: string,
  scenario: Scenario,
  neighbour: NonNullable<Scenario["stuckNeighbour"]>,
  peer: Peer,
  sink: Sink,
  load: LoadGenerator,
  options: Options & { fixedRate: number },
): Promise<ScenarioOutcome[]> {
  if (!peer.addProject)
    return [{ scenario: name, skipped: "one upstream for every client: no tenant to isolate" }];
  const upstream = await startSilentUpstream();
  const neighbourLoad = new LoadGenerator();
  try {
    const login = await peer.addProject("stuck neighbour", upstream.port);
    const alone = await runScenario(stuckNeighbourRows.alone, scenario, peer, sink, load, options);
    const durationMs = options.duration * 1000;
    const leadMs = Math.min(neighbourLeadMs, durationMs);
    const sending = neighbourLoad.run({
      ...loadSpecOf(scenario, peer, leadMs + durationMs, options.fixedRate),
      ...neighbour,
      logins: [login],
    });
    sending.catch(() => {}); // awaited below; its failure is reported there, not as unhandled
    await new Promise((resolve) => setTimeout(resolve, leadMs));
    const stuck = await runScenario(stuckNeighbourRows.stuck, scenario, peer, sink, load, options);
    const sent = await sending;
    stuck.neighbour = {
      accepted: sent.accepted.length,
      errors: sent.errors,
      acceptLatencyMs: summarizeLatencies(sent.accepted.map((r) => r.acceptedAt - r.startedAt)),
      upstreamConnections: upstream.connections(),
    };
    return [alone, stuck];
  } finally {
    neighbourLoad.stop();
    await upstream.stop();
  }
}

/**
 * How long to wait for a backlog to reach the sink after the load stops. Bounded so that a relay
 * that cannot keep up does not stretch the run past its budget; what is still queued then is
 * reported (and is delivered while the next scenario runs, which it slows down).
 */
function drainTimeoutMs(options: Options): number {
  return options.quick ? 15_000 : Math.max(30_000, 1500 * options.duration);
}

function describeMachine(): Record<string, string | number> {
  const list = cpus();
  return {
    cpuCount: list.length,
    cpuModel: list[0]?.model.trim() ?? "unknown",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `Linux ${release()}`,
    node: process.version,
  };
}

/**
 * The open-loop rate: `--rate`, else the pooled delivered rate in this run of the tuned Postfix (the
 * peer of issue 30's `fixed-rate` target), else of the stock one, else the reference run's.
 */
function fixedRateOf(options: Options, report: BenchReport): { rate: number; from: string } {
  if (options.rate) return { rate: options.rate, from: "--rate" };
  for (const peer of ["postfix-tuned", "postfix"] as const) {
    const pooled = report.peers[peer]?.scenarios.find((s) => s.scenario === "pooled-10k");
    const rate = pooled && !("skipped" in pooled) ? pooled.deliveredPerSecond : undefined;
    if (rate && rate > 0) return { rate, from: peer };
  }
  return { rate: referencePostfixRate, from: "reference" };
}

/** Without a relay only the plain message scenarios mean something. */
const ceilingScenarios = ["pooled-10k", "fresh-10k"];

/** A relay under measurement, started and warmed up, with its own sink and load generator. */
interface Measured {
  kind: PeerName;
  peer?: Peer;
  sink: Sink;
  load: LoadGenerator;
  outcome: PeerReport;
  stopped?: boolean;
}

async function startPeer(kind: PeerName, options: Options, report: BenchReport): Promise<Measured> {
  const sink = await Sink.start();
  const freshLogins = Math.ceil(options.duration * 60);
  const measured: Measured = {
    kind,
    sink,
    load: new LoadGenerator(),
    outcome: { version: {}, scenarios: [] },
  };
  try {
    measured.peer =
      kind === "postern"
        ? await startPostern({
            sinkPort: sink.port,
            recipientDomain: domainOfRecipient,
            freshLogins,
            repositoryRoot: root,
            profileDir: profileDir(options, report),
            processes: options.splitRoles
              ? { smtp: options.smtpProcesses, worker: options.workerProcesses }
              : undefined,
          })
        : kind === "postfix" || kind === "postfix-tuned"
          ? await startPostfix({
              sinkPort: sink.port,
              freshLogins,
              repositoryRoot: root,
              concurrency: kind === "postfix-tuned" ? "tuned" : "stock",
            })
          : kind === "forwarder"
            ? await startForwarder({ sinkPort: sink.port, freshLogins })
            : ceiling(sink.port);
    stopOnInterrupt.add(measured.peer);
    measured.outcome.version = { ...measured.peer.version, sink: sink.kind };
    if (!measured.peer.unavailable) {
      const loads = warmUpScenarios(measured.peer, options).map((name) => `${options.warmup} s ${name}`);
      process.stdout.write(`${kind}: warm-up (${loads.join(", ")})…\n`);
      await warmUp(measured.peer, sink, measured.load, options);
    }
  } catch (error) {
    fail(measured, error);
  }
  return measured;
}

function fail(measured: Measured, error: unknown): void {
  process.stderr.write(`${measured.kind}: ${(error as Error).message}\n`);
  measured.outcome.error = (error as Error).message.replace(/\s*\n\s*/g, " ").slice(0, 500);
}

async function measureScenario(measured: Measured, name: string, options: Options, report: BenchReport) {
  const { kind, peer, sink, load, outcome } = measured;
  if (!peer || outcome.error) return;
  if (kind === "ceiling" && !ceilingScenarios.includes(name)) return;
  const scenario = scenarios[name] as Scenario;
  if (peer.unavailable) {
    outcome.scenarios.push({ scenario: name, skipped: peer.unavailable });
    return;
  }
  if (scenario.mode === "http" && peer.httpPort === undefined) {
    outcome.scenarios.push({ scenario: name, skipped: "SMTP only: no HTTP submission" });
    return;
  }
  if (scenario.rules && !peer.addProject) {
    outcome.scenarios.push({ scenario: name, skipped: "no per-project rules" });
    return;
  }
  if (scenario.dkim && !peer.signWithDkim) {
    outcome.scenarios.push({ scenario: name, skipped: "no DKIM signing" });
    return;
  }
  if (scenario.direct && !peer.deliverDirect) {
    outcome.scenarios.push({ scenario: name, skipped: "no direct delivery" });
    return;
  }
  if (scenario.webhooks && !peer.subscribeWebhooks) {
    outcome.scenarios.push({ scenario: name, skipped: "no webhooks" });
    return;
  }
  process.stdout.write(`${kind}: ${name} (${scenario.what})…\n`);
  const { rate: fixedRate, from: fixedRateFrom } = fixedRateOf(options, report);
  if (scenario.fixedRate) Object.assign(report.options, { fixedRate: Math.round(fixedRate), fixedRateFrom });
  // Signing and direct delivery stop after the scenario, so that the ones after it measure what
  // they say.
  let stopSigning: (() => Promise<void>) | undefined;
  let stopDirect: (() => Promise<void>) | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;
  const receiver = scenario.webhooks ? await startBenchReceiver() : undefined;
  try {
    // A project of its own with the scenario's rules, its upstream the same sink.
    const ruled =
      scenario.rules && peer.addProject
        ? { ...peer, login: await peer.addProject(name, sink.port, { rules: scenario.rules }) }
        : peer;
    // The main project carried the warm-up load; a project of the scenario's own gets the same,
    // unmeasured, so that a cold project (its first upstream connections and deliveries) is not
    // compared with a warm one.
    if (ruled !== peer && options.warmup > 0)
      await drain(
        sink,
        await load.run(loadSpecOf(scenario, ruled, options.warmup * 1000, fixedRate)),
        drainTimeoutMs(options),
      );
    if (scenario.dkim) stopSigning = await peer.signWithDkim?.(domainOfSender);
    if (scenario.direct) stopDirect = await peer.deliverDirect?.();
    if (receiver) unsubscribe = await peer.subscribeWebhooks?.(receiver.url);
    const results = scenario.stuckNeighbour
      ? await runStuckNeighbour(name, scenario, scenario.stuckNeighbour, peer, sink, load, {
          ...options,
          fixedRate,
        })
      : [await runScenario(name, scenario, ruled, sink, load, { ...options, fixedRate, receiver })];
    for (const result of results) {
      outcome.scenarios.push(result);
      process.stdout.write(`  ${JSON.stringify(brief(result))}\n`);
    }
  } catch (error) {
    fail(measured, error);
  } finally {
    await stopSigning?.();
    await stopDirect?.();
    await unsubscribe?.();
    await receiver?.stop();
  }
}

async function stopPeer(measured: Measured, options: Options, report: BenchReport): Promise<void> {
  if (measured.stopped) return;
  measured.stopped = true;
  stopOnInterrupt.delete(measured.peer);
  await measured.peer?.stop();
  measured.load.stop();
  measured.sink.stop();
  const dir = profileDir(options, report);
  if (measured.kind === "postern" && dir) report.profile = await summarizeProfiles(dir, root);
}

const resultsDir = join(root, "bench", "results");
const runName = (report: BenchReport) => report.startedAt.replace(/[:.]/g, "-");

function profileDir(options: Options, report: BenchReport): string | undefined {
  return options.profile ? join(resultsDir, `${runName(report)}-profile`) : undefined;
}

function brief(outcome: ScenarioOutcome) {
  if ("skipped" in outcome) return outcome;
  const round = (v: number | undefined) => (v === undefined ? undefined : Math.round(v));
  return {
    acceptedPerSecond: round(outcome.acceptedPerSecond),
    deliveredPerSecond: round(outcome.deliveredPerSecond),
    acceptP99: round(outcome.acceptLatencyMs.p99),
    arrivalP99: round(outcome.arrivalLatencyMs?.p99),
    errors: outcome.errors,
    errorSamples: outcome.errorSamples,
    webhooks: outcome.webhooks && {
      acknowledged: outcome.webhooks.acknowledged,
      expected: outcome.webhooks.expected,
      eventsPerSecond: round(outcome.webhooks.eventsPerSecond),
      latencyP99: round(outcome.webhooks.latencyMs.p99),
    },
    neighbour: outcome.neighbour && {
      accepted: outcome.neighbour.accepted,
      acceptP99: round(outcome.neighbour.acceptLatencyMs.p99),
      errors: outcome.neighbour.errors,
      upstreamConnections: outcome.neighbour.upstreamConnections,
    },
  };
}

async function writeDocs(report: BenchReport): Promise<void> {
  const docs = join(root, "docs", "benchmarks.md");
  const current = await readFile(docs, "utf8").catch(() => "# Benchmarks\n");
  await writeFile(docs, replaceBetweenMarkers(current, renderMarkdown(report)));
  process.stdout.write(`Table written to ${docs}\n`);
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv);
  if (options.render) {
    await writeDocs(JSON.parse(await readFile(options.render, "utf8")) as BenchReport);
    return 0;
  }
  const startedAt = new Date();
  const report: BenchReport = {
    startedAt: startedAt.toISOString(),
    machine: describeMachine(),
    options: { ...options },
    peers: {},
  };
  // Every relay runs from the start, and each scenario is measured on each in turn, so that the
  // machine's drift (its rate moves by a fifth or more within an hour) falls on all of them alike
  // instead of on whichever ran last. The Postfixes go before the others: their open-loop runs go
  // at the rate Postfix delivered pooled (the targets' yardstick).
  const kinds: PeerName[] = ["ceiling", ...options.peers, "postern"];
  const running: Measured[] = [];
  try {
    for (const kind of kinds) {
      const measured = await startPeer(kind, options, report);
      running.push(measured);
      report.peers[kind] = measured.outcome;
    }
    for (const name of options.scenarios) {
      for (const measured of running) await measureScenario(measured, name, options, report);
    }
    // The stats endpoint is timed with Postern alone, as before the relays ran side by side: with
    // the others still up (idle) its p95 read more than twice as long (docs/benchmarks-history.md,
    // Twelfth round).
    for (const measured of running)
      if (measured.kind !== "postern") await stopPeer(measured, options, report);
    const postern = running.find((m) => m.kind === "postern");
    if (postern?.peer && !postern.outcome.error && options.seedMessages > 0) {
      report.stats = await measureStatsEndpoint(
        postern.peer as PosternPeer,
        options.seedMessages,
        options.quick ? 20 : 200,
      );
    }
  } finally {
    for (const measured of running) await stopPeer(measured, options, report);
  }
  for (const peer of Object.values(report.peers)) Object.assign(report.machine, peer.version);

  await mkdir(resultsDir, { recursive: true });
  const jsonFile = join(resultsDir, `${runName(report)}.json`);
  await writeFile(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  const markdown = renderMarkdown(report);
  process.stdout.write(`\n${markdown}\n\nResults: ${jsonFile}\n`);
  // The table in the docs is the latest complete, comparable run.
  const partial =
    options.quick ||
    options.profile ||
    options.splitRoles ||
    options.scenarios.length < Object.keys(scenarios).length;
  if (partial)
    process.stdout.write(`docs/benchmarks.md left alone (partial run); --render ${jsonFile} writes it\n`);
  else await writeDocs(report);
  return Object.values(report.peers).some((p) => p.error) ? 1 : 0;
}

/**
 * The relay running when the run is interrupted. Postern, the sink and the load generator die with
 * the terminal's process group anyway, but a private Postfix is a daemon: it must be stopped.
 */
const stopOnInterrupt = new Set<Peer | undefined>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, async () => {
    process.stderr.write(`bench: ${signal}, stopping\n`);
    for (const peer of stopOnInterrupt) await peer?.stop().catch(() => {});
    process.exit(130);
  });
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  },
);
