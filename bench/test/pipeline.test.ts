import { createConnection, type Socket } from "node:net";
import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator, Sink, smtpSinkInstalled } from "../children";
import { type Arrival, benchSentHeader, type LoadSpec } from "../protocol";

let load: LoadGenerator;
beforeAll(() => {
  load = new LoadGenerator();
});
afterAll(() => load.stop());

const base = {
  host: "127.0.0.1",
  concurrency: 4,
  messageBytes: 10 * 1024,
  durationMs: 1000,
  from: "bench@bench.example",
  to: "sink@bench.example",
} satisfies Partial<LoadSpec>;

async function arrivalsOf(sink: Sink, count: number): Promise<Arrival[]> {
  const arrivals: Arrival[] = [];
  for (let round = 0; round < 100 && arrivals.length < count; round++) {
    arrivals.push(...(await sink.collect()));
    if (arrivals.length < count) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return arrivals;
}

// Both sinks the harness can use: ours always, Postfix's smtp-sink where it is installed.
const kinds = smtpSinkInstalled() ? (["smtp-server", "smtp-sink"] as const) : (["smtp-server"] as const);

describe.each(kinds)("load generator into the %s sink", (kind) => {
  let sink: Sink;
  beforeAll(async () => {
    sink = await Sink.start(kind);
  });
  afterAll(() => sink.stop());

  it.each(["pooled", "fresh"] as const)("times every %s message from send to arrival", async (mode) => {
    const result = await load.run({ ...base, port: sink.port, mode, logins: [] });
    expect(result.errors).toBe(0);
    expect(result.accepted.length).toBeGreaterThan(0);

    const arrivals = await arrivalsOf(sink, result.accepted.length);
    expect(arrivals).toHaveLength(result.accepted.length);
    // Each arrival carries the send time of exactly one accepted message, and comes after it (a
    // file's mtime comes from the kernel's coarse clock, measured up to 6 ms behind Node's).
    expect(arrivals.map((a) => a.sentAt).sort()).toEqual(result.accepted.map((r) => r.startedAt).sort());
    const coarseClock = kind === "smtp-sink" ? 10 : 0;
    for (const arrival of arrivals)
      expect(arrival.arrivedAt).toBeGreaterThanOrEqual((arrival.sentAt as number) - coarseClock);
  });

  it("does not count a message whose data is still on its way", async () => {
    const client = await RawSmtpClient.connect(sink.port);
    for (const command of [
      "EHLO bench.example",
      "MAIL FROM:<bench@bench.example>",
      "RCPT TO:<sink@bench.example>",
      "DATA",
    ])
      await client.command(command);
    // smtp-sink has created its dump file; nothing of the message is in it yet.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await sink.collect()).toEqual([]);

    const sentAt = Date.now();
    expect(await client.command(`${benchSentHeader}: ${sentAt}\r\nSubject: slow\r\n\r\nbody\r\n.`)).toMatch(
      /^250/,
    );
    await client.close();
    const arrivals = await arrivalsOf(sink, 1);
    expect(arrivals.map((a) => a.sentAt)).toEqual([sentAt]);
  });
});

/** Just enough of an SMTP client to stop halfway through a transaction. */
class RawSmtpClient {
  private buffered = "";
  private waiting: ((reply: string) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.buffered += chunk;
      // A reply is complete at its last line: code, space, text.
      const last = /(?:^|\r\n)(\d{3} [^\r\n]*)\r\n$/.exec(this.buffered);
      if (last && this.waiting) {
        const reply = this.buffered;
        this.buffered = "";
        this.waiting(reply);
      }
    });
  }

  static async connect(port: number): Promise<RawSmtpClient> {
    const socket = createConnection(port, "127.0.0.1");
    const client = new RawSmtpClient(socket);
    await client.reply();
    return client;
  }

  command(line: string): Promise<string> {
    const reply = this.reply();
    this.socket.write(`${line}\r\n`);
    return reply;
  }

  async close(): Promise<void> {
    await this.command("QUIT");
    this.socket.destroy();
  }

  private reply(): Promise<string> {
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}

describe("load generator against an authenticating server", () => {
  let upstream: SmtpSink;
  const login = { username: "bench-user", password: "bench-password" };
  beforeAll(async () => {
    upstream = await SmtpSink.start({ auth: { user: login.username, pass: login.password } });
  });
  afterAll(() => upstream.stop());

  it("sends over STARTTLS with AUTH", async () => {
    const result = await load.run({
      ...base,
      port: upstream.port,
      mode: "fresh",
      durationMs: 300,
      logins: [login],
    });
    expect(result.errors).toBe(0);
    expect(upstream.messages.length).toBe(result.accepted.length);
    expect(upstream.messages.every((m) => m.secure && m.user === login.username)).toBe(true);
    expect(upstream.messages[0]?.raw.length).toBeGreaterThanOrEqual(10 * 1024);
  });

  it("counts AUTH verifications, and reports refused ones as errors", async () => {
    const wrong = { username: login.username, password: "wrong" };
    const result = await load.run({
      ...base,
      port: upstream.port,
      mode: "auth",
      durationMs: 5000,
      logins: [login, wrong, login],
    });
    expect(result.accepted).toHaveLength(2);
    expect(result.errors).toBe(1);
    expect(result.errorSamples.join()).toMatch(/535/);
  });
});
