/**
 * The upstream sink of the benchmark, run as its own process (`fork`ed by bench/run.ts, IPC).
 *
 * Postfix's `smtp-sink` (C, event-driven) is used when installed, so the sink costs as little CPU
 * as possible on a 2-core machine; it writes each message to a file in a tmpfs directory, which
 * this process reaps: the file's mtime is the arrival time (the last byte written at "."; the
 * kernel stamps it from its coarse clock, measured up to 6 ms behind Node's clock), and the
 * X-Bench-Sent header the load generator put in gives the send time. Without smtp-sink, an
 * smtp-server of ours stands in and timestamps arrivals itself.
 *
 * Messages: in {type:"start", kind, port} → out {type:"ready", pid};
 * in {type:"collect"} → out {type:"arrivals", arrivals}, the arrivals since the last collect.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { chmod, open, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { SMTPServer } from "smtp-server";
import { type Arrival, type SinkReply, type SinkRequest, sentAtFromHead, waitForPort } from "./protocol";

const arrivals: Arrival[] = [];

function startOwnSink(port: number): Promise<void> {
  const server = new SMTPServer({
    disabledCommands: ["AUTH", "STARTTLS"],
    // A reverse DNS lookup per connection costs ~100 ms where DNS does not answer loopback PTRs.
    disableReverseLookup: true,
    authOptional: true,
    logger: false,
    banner: "postern bench sink",
    size: 64 * 1024 * 1024,
    onData(stream, _session, callback) {
      let head = "";
      stream.on("data", (chunk: Buffer) => {
        if (head.length < 8192) head += chunk.toString("latin1", 0, Math.min(chunk.length, 8192));
      });
      stream.on("end", () => {
        arrivals.push({ sentAt: sentAtFromHead(head), arrivedAt: Date.now() });
        callback(null, "2.0.0 sunk");
      });
    },
  });
  server.on("error", () => {});
  return new Promise((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
}

let smtpSink: ChildProcess | undefined;
let dumpDir = "";

/** smtp-sink writes one file per message (-d); it must run unprivileged (-u) when we are root. */
async function startPostfixSink(port: number): Promise<void> {
  dumpDir = mkdtempSync("/dev/shm/postern-bench-sink-");
  await chmod(dumpDir, 0o777);
  const asRoot = process.getuid?.() === 0;
  smtpSink = spawn(
    "smtp-sink",
    [...(asRoot ? ["-u", "nobody"] : []), "-d", `${dumpDir}/m.`, "-m", "1000", `127.0.0.1:${port}`, "1024"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  smtpSink.once("exit", (code) => {
    if (code !== null && code !== 0) process.stderr.write(`smtp-sink exited with ${code}\n`);
  });
  await waitForPort(port, 5000);
}

/**
 * Records and deletes the dump files that are complete. smtp-sink creates a file when DATA starts
 * and writes through stdio buffers, so a file may stay empty, or hold half a header section, long
 * after its mtime when the relay sends slowly (1 MiB messages under load: a whole second and
 * more). A file is taken once it has not changed for `settleMs` and its head holds the
 * X-Bench-Sent header; one whose head still lacks it is left for a later round, until
 * `headerlessAfterMs` have passed (the relay dropped the header: counted, not timed).
 */
async function reapDumpFiles(settleMs = 250, headerlessAfterMs = 30_000): Promise<void> {
  const now = Date.now();
  const buffer = Buffer.alloc(8192);
  for (const name of await readdir(dumpDir)) {
    const file = join(dumpDir, name);
    try {
      const info = await stat(file);
      const unchangedMs = now - info.mtimeMs;
      if (unchangedMs < settleMs) continue;
      const handle = await open(file, "r");
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      await handle.close();
      const sentAt = sentAtFromHead(buffer.toString("latin1", 0, bytesRead));
      if (sentAt === undefined && unchangedMs < headerlessAfterMs) continue;
      arrivals.push({ sentAt, arrivedAt: info.mtimeMs });
      await rm(file, { force: true });
    } catch {
      // removed concurrently; nothing to record
    }
  }
}

function send(message: SinkReply): void {
  process.send?.(message);
}

let reaper: NodeJS.Timeout | undefined;
let reaping = Promise.resolve();

process.on("message", async (request: SinkRequest) => {
  if (request.type === "start") {
    if (request.kind === "smtp-sink") {
      await startPostfixSink(request.port);
      // Reaping keeps the tmpfs small during long or large-message scenarios.
      reaper = setInterval(() => {
        reaping = reaping.then(() => reapDumpFiles());
      }, 1000);
    } else {
      await startOwnSink(request.port);
    }
    send({ type: "ready", pid: process.pid });
  } else if (request.type === "collect") {
    if (smtpSink) {
      reaping = reaping.then(() => reapDumpFiles());
      await reaping;
    }
    send({ type: "arrivals", arrivals: arrivals.splice(0) });
  }
});

function cleanup(): void {
  if (reaper) clearInterval(reaper);
  smtpSink?.kill("SIGTERM");
  if (dumpDir) rmSync(dumpDir, { recursive: true, force: true });
}
process.on("disconnect", () => {
  cleanup();
  process.exit(0);
});
process.on("SIGTERM", () => {
  cleanup();
  process.exit(0);
});
