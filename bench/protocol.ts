/** What the benchmark's processes (runner, load generator, sink) say to each other over IPC. */
import { randomBytes } from "node:crypto";
import { connect } from "node:net";

/** Header the load generator puts first in every message: the send time, ms since the epoch. */
export const benchSentHeader = "X-Bench-Sent";

export interface Arrival {
  /** From the X-Bench-Sent header; undefined when the header did not survive (counted, not timed). */
  sentAt: number | undefined;
  arrivedAt: number;
}

export type SinkKind = "smtp-sink" | "smtp-server";
export type SinkRequest = { type: "start"; kind: SinkKind; port: number } | { type: "collect" };
export type SinkReply = { type: "ready"; pid: number } | { type: "arrivals"; arrivals: Arrival[] };

export type ForwarderRequest = { type: "start"; port: number; sinkPort: number; password: string };
export type ForwarderReply = { type: "ready"; pid: number };

export interface SmtpLogin {
  username: string;
  password: string;
}

/**
 * One load run, its `concurrency` clients spread evenly over `ports` (client i on port i mod their
 * number: a relay with several SMTP processes listens on one port each). `pooled`: `concurrency`
 * persistent connections (STARTTLS + AUTH once each);
 * `fresh`: `concurrency` clients each opening a new connection + STARTTLS + AUTH per message;
 * `auth`: connect + STARTTLS + AUTH + QUIT, through each of `logins` once (a single login: again
 * and again until the time is up); `http`: `concurrency` keep-alive HTTP/1.1 connections, each
 * POSTing JSON messages to `/v1/messages` with `apiToken` (`ports` is then the API's).
 * With `ratePerSecond`, messages are started on a fixed schedule (open loop) over the pooled
 * connections, in turn over the ports, instead of as fast as the server answers.
 */
export interface LoadSpec {
  host: string;
  ports: number[];
  mode: "pooled" | "fresh" | "auth" | "http";
  concurrency: number;
  messageBytes: number;
  /** Stop starting messages after this long. */
  durationMs: number;
  /** Stop after this many messages (the 25 MB scenario sends one). */
  maxMessages?: number;
  ratePerSecond?: number;
  logins: SmtpLogin[];
  /** The project API token of `http` mode. */
  apiToken?: string;
  from: string;
  to: string;
}

export interface SendRecord {
  startedAt: number;
  /** Time of the 250 after DATA (of the successful AUTH in `auth` mode, of the 202 in `http` mode). */
  acceptedAt: number;
}

export interface LoadResult {
  startedAt: number;
  endedAt: number;
  accepted: SendRecord[];
  errors: number;
  /** A few distinct error messages, for the report. */
  errorSamples: string[];
}

export type LoadRequest = { type: "run"; spec: LoadSpec };
export type LoadReply = { type: "result"; result: LoadResult };

/** Reads the send timestamp from the head of a message (trace headers prepended by relays included). */
export function sentAtFromHead(head: string): number | undefined {
  const match = new RegExp(`^${benchSentHeader}:[ \\t]*(\\d+(?:\\.\\d+)?)`, "im").exec(head);
  return match ? Number(match[1]) : undefined;
}

/**
 * A message body of about `bytes` bytes: base64 text in 76-character lines, like an attachment,
 * so relays do the same line processing they would for real mail.
 */
export function messageBody(bytes: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  while (size < bytes) {
    const line = randomBytes(57).toString("base64");
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.from(`${lines.join("\r\n")}\r\n`);
}

export function messageHead(spec: Pick<LoadSpec, "from" | "to">, sentAt: number, sequence: number): Buffer {
  return Buffer.from(
    [
      `${benchSentHeader}: ${sentAt}`,
      `From: <${spec.from}>`,
      `To: <${spec.to}>`,
      `Subject: bench ${sequence}`,
      `Message-ID: <bench.${sentAt}.${sequence}@bench.example>`,
      `Date: ${new Date(sentAt).toUTCString()}`,
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=us-ascii",
      "",
      "",
    ].join("\r\n"),
  );
}

/** Resolves once something accepts TCP connections on host:port. */
export async function waitForPort(port: number, timeoutMs: number, host = "127.0.0.1"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, host, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}
