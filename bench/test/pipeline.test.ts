import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createConnection, type Socket } from "node:net";
import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator, Sink, smtpSinkInstalled } from "../children";
import { type Arrival, benchSentHeader, type LoadSpec, sentAtFromHead } from "../protocol";

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
    const result = await load.run({ ...base, ports: [sink.port], mode, logins: [] });
    expect(result.errors).toBe(0);
    expect(result.accepted.length).toBeGreaterThan(0);

    const arrivals = await arrivalsOf(sink, result.accepted.length);
    expect(arrivals).toHaveLength(result.accepted.length);
    // Each arrival carries the send time of exactly one accepted message, and comes after it. A
    // file's mtime comes from the kernel's coarse clock, which lags Node's by a tick or more: 6 ms
    // on an idle machine, 11.5 ms seen in CI under load. 100 ms still tells milliseconds from
    // seconds, the mistake this guards against.
    expect(arrivals.map((a) => a.sentAt).sort()).toEqual(result.accepted.map((r) => r.startedAt).sort());
    const coarseClock = kind === "smtp-sink" ? 100 : 0;
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
      ports: [upstream.port],
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
      ports: [upstream.port],
      mode: "auth",
      durationMs: 5000,
      logins: [login, wrong, login],
    });
    expect(result.accepted).toHaveLength(2);
    expect(result.errors).toBe(1);
    expect(result.errorSamples.join()).toMatch(/535/);
  });
});

describe("load generator over several ports (a relay with several SMTP processes)", () => {
  const login = { username: "bench-user", password: "bench-password" };
  let upstreams: SmtpSink[];
  beforeAll(async () => {
    upstreams = await Promise.all(
      [1, 2].map(() => SmtpSink.start({ auth: { user: login.username, pass: login.password } })),
    );
  });
  afterAll(() => Promise.all(upstreams.map((upstream) => upstream.stop())));
  const counts = (of: (upstream: SmtpSink) => unknown[]) => upstreams.map((upstream) => of(upstream).length);
  const spec = (fields: Partial<LoadSpec>): LoadSpec => ({
    ...base,
    ports: upstreams.map((upstream) => upstream.port),
    mode: "pooled",
    logins: [login],
    ...fields,
  });

  it("gives each port its share of the pooled connections, and every port messages", async () => {
    const [messagesBefore, authsBefore] = [counts((u) => u.messages), counts((u) => u.authAttempts)];
    const result = await load.run(spec({ concurrency: 4 }));
    expect(result.errors).toBe(0);
    const messages = counts((u) => u.messages).map((n, i) => n - (messagesBefore[i] as number));
    const connections = counts((u) => u.authAttempts).map((n, i) => n - (authsBefore[i] as number));
    expect(messages.reduce((a, b) => a + b)).toBe(result.accepted.length);
    for (const n of messages) expect(n).toBeGreaterThan(0);
    // STARTTLS + AUTH once per pooled connection: two of the four clients' connections per port.
    for (const n of connections) expect(n).toBeGreaterThan(0);
    for (const n of connections) expect(n).toBeLessThanOrEqual(2);
  });

  it("sends fresh connections to every port", async () => {
    const before = counts((u) => u.messages);
    const result = await load.run(spec({ mode: "fresh", concurrency: 2, durationMs: 500 }));
    expect(result.errors).toBe(0);
    const messages = counts((u) => u.messages).map((n, i) => n - (before[i] as number));
    expect(messages.reduce((a, b) => a + b)).toBe(result.accepted.length);
    for (const n of messages) expect(n).toBeGreaterThan(0);
  });

  it("sends an open loop's messages to the ports in turn", async () => {
    const before = counts((u) => u.messages);
    const result = await load.run(spec({ concurrency: 4, ratePerSecond: 20, durationMs: 1000 }));
    expect(result.errors).toBe(0);
    const [first, second] = counts((u) => u.messages).map((n, i) => n - (before[i] as number));
    expect((first as number) + (second as number)).toBe(result.accepted.length);
    expect(Math.abs((first as number) - (second as number))).toBeLessThanOrEqual(1);
  });
});

describe("load generator in http mode", () => {
  const apiToken = "pst_api_bench";
  interface Submission {
    authorization: string | undefined;
    body: { from: string; to: string[]; subject: string; text: string; headers: Record<string, string> };
  }
  const submissions: Submission[] = [];
  const sockets = new Set<Socket>();
  let refuse = false;
  // Stands in for POST /v1/messages: 202 {id}, or 429 while `refuse` is set.
  const api = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (refuse) {
        res.writeHead(429, { "content-type": "application/json" }).end('{"error":"rate_limited"}');
        return;
      }
      submissions.push({
        authorization: req.headers.authorization,
        body: JSON.parse(Buffer.concat(chunks).toString()),
      });
      res.writeHead(202, { "content-type": "application/json" }).end(`{"id":"${submissions.length}"}`);
    });
  });
  api.on("connection", (socket: Socket) => sockets.add(socket));
  let port: number;
  beforeAll(async () => {
    await new Promise<void>((resolve) => api.listen(0, "127.0.0.1", resolve));
    port = (api.address() as AddressInfo).port;
  });
  afterAll(() => new Promise((resolve) => api.close(resolve)));

  it("POSTs 10 KiB JSON messages with the token over at most `concurrency` kept-alive connections", async () => {
    const result = await load.run({
      ...base,
      ports: [port],
      mode: "http",
      durationMs: 500,
      logins: [],
      apiToken,
    });
    expect(result.errors).toBe(0);
    expect(result.accepted.length).toBe(submissions.length);
    expect(submissions.length).toBeGreaterThan(base.concurrency);
    expect(sockets.size).toBeLessThanOrEqual(base.concurrency);
    const [first] = submissions;
    expect(first?.authorization).toBe(`Bearer ${apiToken}`);
    expect(first?.body.from).toBe(base.from);
    expect(first?.body.to).toEqual([base.to]);
    expect(first?.body.text.length).toBeGreaterThanOrEqual(10 * 1024);
    // The header the sink reads the send time from, as the API's composer writes it.
    const sentAt = Number(first?.body.headers[benchSentHeader]);
    expect(sentAtFromHead(`${benchSentHeader}: ${sentAt}\r\n`)).toBe(sentAt);
    expect(sentAt).toBeGreaterThanOrEqual(result.startedAt);
  });

  it("counts any answer but 202 as an error, with its status", async () => {
    refuse = true;
    const result = await load.run({
      ...base,
      ports: [port],
      mode: "http",
      durationMs: 200,
      logins: [],
      apiToken,
    });
    refuse = false;
    expect(result.accepted).toHaveLength(0);
    expect(result.errors).toBeGreaterThan(0);
    expect(result.errorSamples.join()).toMatch(/HTTP 429: \{"error":"rate_limited"\}/);
  });
});
