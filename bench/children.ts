/** The runner's side of the sink and load generator processes (bench/sink.ts, bench/load.ts). */
import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "@postern/embedded";
import type {
  Arrival,
  ForwarderReply,
  ForwarderRequest,
  LoadReply,
  LoadResult,
  LoadSpec,
  SinkKind,
  SinkReply,
  SinkRequest,
} from "./protocol";

const benchDir = dirname(fileURLToPath(import.meta.url));

function forkTs(file: string): ChildProcess {
  return fork(join(benchDir, file), [], { execArgv: ["--import", "tsx"], stdio: "inherit" });
}

/** Sends one message and resolves with the first reply `accept` takes; rejects if the child exits. */
function request<Reply>(
  child: ChildProcess,
  message: object,
  accept: (reply: Reply) => boolean,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const onMessage = (reply: Reply) => {
      if (!accept(reply)) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(reply);
    };
    const onExit = (code: number | null) =>
      reject(new Error(`${child.spawnargs.at(-1)} exited with ${code}`));
    child.on("message", onMessage);
    child.once("exit", onExit);
    child.send(message);
  });
}

export function smtpSinkInstalled(): boolean {
  return existsSync("/usr/sbin/smtp-sink");
}

export class Sink {
  private constructor(
    readonly process: ChildProcess,
    readonly port: number,
    readonly kind: SinkKind,
  ) {}

  static async start(kind: SinkKind = smtpSinkInstalled() ? "smtp-sink" : "smtp-server"): Promise<Sink> {
    const port = await freePort();
    const child = forkTs("sink.ts");
    await request<SinkReply>(
      child,
      { type: "start", kind, port } satisfies SinkRequest,
      (r) => r.type === "ready",
    );
    return new Sink(child, port, kind);
  }

  /** The arrivals since the previous call. */
  async collect(): Promise<Arrival[]> {
    const reply = await request<SinkReply>(
      this.process,
      { type: "collect" } satisfies SinkRequest,
      (r) => r.type === "arrivals",
    );
    return reply.type === "arrivals" ? reply.arrivals : [];
  }

  stop(): void {
    this.process.disconnect();
  }
}

export class LoadGenerator {
  readonly process = forkTs("load.ts");

  async run(spec: LoadSpec): Promise<LoadResult> {
    const reply = await request<LoadReply>(this.process, { type: "run", spec }, (r) => r.type === "result");
    return reply.result;
  }

  stop(): void {
    this.process.disconnect();
  }
}

/** Starts the forwarder (bench/forwarder.ts) on `port`; it stops when the runner disconnects. */
export async function startForwarderProcess(settings: Omit<ForwarderRequest, "type">): Promise<ChildProcess> {
  const child = forkTs("forwarder.ts");
  await request<ForwarderReply>(
    child,
    { type: "start", ...settings } satisfies ForwarderRequest,
    (r) => r.type === "ready",
  );
  return child;
}
