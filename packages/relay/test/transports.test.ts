import { type RelayEnvelope, UpstreamTransports } from "@postern/relay";
import { SmtpSink } from "@postern/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

let sink: SmtpSink;
let transports: UpstreamTransports;
beforeEach(async () => {
  sink = await SmtpSink.start({ starttls: false });
});
afterEach(async () => {
  transports?.close();
  await sink?.stop();
});

const envelope = (n: number, recipients = ["rcpt@example.net"]): RelayEnvelope => ({
  mailFrom: "sender@example.com",
  recipients,
  raw: Buffer.from(`Subject: message ${n}\r\n\r\nbody ${n}\r\n`),
});
const upstream = () => ({ projectId: "project", upstreamUrl: sink.url, password: undefined });
const sessionsOf = (messages: SmtpSink["messages"]) => new Set(messages.map((m) => m.sessionId)).size;

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("a project's connections to its upstream", () => {
  it("carries many messages over at most maxConnections sessions", async () => {
    transports = new UpstreamTransports({ maxConnections: 2 });
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, n) => transports.relay(upstream(), envelope(n))),
    );
    expect(results.map((r) => r.verdict.outcome)).toEqual(Array(12).fill("delivered"));
    expect(sink.messages).toHaveLength(12);
    expect(sessionsOf(sink.messages)).toBeLessThanOrEqual(2);
    expect(sink.openConnections).toBeLessThanOrEqual(2);
  });

  it("sends a body of several slices byte for byte, dots at the slices' edges included", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    // 64-byte lines after a 64-byte head, each starting with a dot: a line starts at every
    // multiple of 64, so at each 64 KiB edge the CRLF ends one slice and the dot begins the next.
    const head = `Subject: large\r\n\r\n${"p".repeat(44)}\r\n`;
    const raw = Buffer.from(head + `.${"d".repeat(61)}\r\n`.repeat(5_000));
    expect(head.length).toBe(64);
    const result = await transports.relay(upstream(), { ...envelope(1), raw });
    expect(result.verdict.outcome).toBe("delivered");
    expect(sink.messages[0]?.raw.equals(raw)).toBe(true);
  });

  it("sends the prefix (the DKIM signature) in front of the body, made while MAIL and RCPT travel", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    let signed: (fields: Buffer) => void = () => {};
    const prefix = new Promise<Buffer>((resolve) => {
      signed = resolve;
    });
    const fields = Buffer.from("DKIM-Signature: v=1; a=rsa-sha256; b=abc\r\n");
    // Settles only once the upstream has the recipient: waited for before MAIL, it never would.
    sink.rcptReply = () => {
      signed(fields);
      return undefined;
    };
    const message = envelope(1);
    const result = await transports.relay(upstream(), { ...message, prefix });
    expect(result.verdict.outcome).toBe("delivered");
    expect(sink.messages[0]?.raw.equals(Buffer.concat([fields, message.raw]))).toBe(true);
  });

  it("a prefix that fails ends the transaction with nothing delivered, and the next message is delivered", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    const prefix = Promise.reject(new Error("DKIM signing for example.com failed: bad key"));
    // As the signer hands it over: handled, so that a transaction refused before DATA leaves no
    // unhandled rejection behind.
    prefix.catch(() => {});
    const failed = await transports.relay(upstream(), { ...envelope(1), prefix });
    expect(failed.verdict.outcome).toBe("deferred");
    expect(failed.verdict.response).toContain("DKIM signing for example.com failed");
    const next = await transports.relay(upstream(), envelope(2));
    expect(next.verdict.outcome).toBe("delivered");
    expect(sink.messages.map((m) => m.raw.toString())).toEqual([envelope(2).raw.toString()]);
  });

  it("replaces a session after maxMessagesPerConnection messages", async () => {
    transports = new UpstreamTransports({ maxConnections: 1, maxMessagesPerConnection: 3 });
    for (let n = 0; n < 7; n++) await transports.relay(upstream(), envelope(n));
    expect(sink.messages).toHaveLength(7);
    expect(sessionsOf(sink.messages)).toBe(3);
    await until(() => sink.openConnections === 1, "the exhausted sessions to close");
  });

  it("keeps the session after the upstream refuses a message (RSET), and sends the next over it", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    sink.rcptReply = (address) =>
      address === "unknown@example.net" ? { code: 550, message: "5.1.1 no such user" } : undefined;
    const refused = await transports.relay(upstream(), envelope(1, ["unknown@example.net"]));
    expect(refused.verdict).toMatchObject({ outcome: "failed", code: 550, enhancedCode: "5.1.1" });
    sink.dataReply = (message) =>
      message.raw.includes("message 2") ? { code: 554, message: "5.6.0 content refused" } : undefined;
    const rejected = await transports.relay(upstream(), envelope(2));
    expect(rejected.verdict).toMatchObject({ outcome: "failed", code: 554 });
    const delivered = await transports.relay(upstream(), envelope(3));
    expect(delivered.verdict.outcome).toBe("delivered");
    expect(sink.messages.map((m) => m.raw.toString())).toEqual([envelope(3).raw.toString()]);
    expect(sink.openConnections).toBe(1);
  });

  it("sends over a fresh session when the upstream drops a kept one before the message (421 at MAIL)", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    await transports.relay(upstream(), envelope(1));
    // The kept session's next transaction is refused with 421, as an upstream shutting down says.
    sink.mailReply = (transaction) =>
      transaction === 2 ? { code: 421, message: "4.3.2 shutting down" } : undefined;
    const result = await transports.relay(upstream(), envelope(2));
    expect(result.verdict.outcome).toBe("delivered");
    expect(sink.messages).toHaveLength(2);
    expect(sessionsOf(sink.messages)).toBe(2);
  });

  it("does not reuse a session the upstream hung up on while it was idle", async () => {
    transports = new UpstreamTransports({ maxConnections: 1 });
    await transports.relay(upstream(), envelope(1));
    sink.dropConnections();
    await until(() => sink.openConnections === 0, "the upstream to hang up");
    const result = await transports.relay(upstream(), envelope(2));
    expect(result.verdict.outcome).toBe("delivered");
    expect(sessionsOf(sink.messages)).toBe(2);
  });

  it("defers, not fails, when the upstream cannot be reached, and delivers once it is back", async () => {
    transports = new UpstreamTransports({ maxConnections: 2 });
    await sink.down();
    const results = await Promise.all([1, 2, 3].map((n) => transports.relay(upstream(), envelope(n))));
    for (const result of results) expect(result.verdict).toMatchObject({ outcome: "deferred", code: null });
    await sink.up();
    const result = await transports.relay(upstream(), envelope(4));
    expect(result.verdict.outcome).toBe("delivered");
  });

  it("closes a project's sessions once it has been idle for idleCloseMs", async () => {
    transports = new UpstreamTransports({ maxConnections: 2, idleCloseMs: 100 });
    await Promise.all([1, 2].map((n) => transports.relay(upstream(), envelope(n))));
    expect(sink.openConnections).toBeGreaterThan(0);
    await until(() => sink.openConnections === 0, "the idle sessions to close");
  });
});

describe("connections to one upstream, all projects together", () => {
  it("a project at the upstream's cap takes a slot another project keeps idle", async () => {
    transports = new UpstreamTransports({ maxConnections: 2, maxUpstreamConnections: 2, idleCloseMs: 300 });
    const of = (projectId: string) => ({ projectId, upstreamUrl: sink.url, password: undefined });
    // Project A opens both slots and keeps them idle.
    const first = await Promise.all([0, 1].map((n) => transports.relay(of("a"), envelope(n))));
    expect(first.map((r) => r.verdict.outcome)).toEqual(["delivered", "delivered"]);
    expect(sink.openConnections).toBe(2);
    // Project B has mail: it is sent now, not given back until A's idle pool closes.
    const second = await Promise.all([2, 3].map((n) => transports.relay(of("b"), envelope(n))));
    expect(second.map((r) => r.busy)).toEqual([undefined, undefined]);
    expect(second.map((r) => r.verdict.outcome)).toEqual(["delivered", "delivered"]);
    expect(sink.messages).toHaveLength(4);
    // Turn about, many times: each slot taken over is counted once, so the upstream never looks
    // fuller than its open connections and nobody is given back.
    for (let round = 0; round < 10; round++) {
      const project = round % 2 === 0 ? "a" : "b";
      const sent = await Promise.all([0, 1].map((n) => transports.relay(of(project), envelope(10 + n))));
      expect(sent.map((r) => r.busy)).toEqual([undefined, undefined]);
    }
    expect(sink.messages).toHaveLength(24);
    expect(sink.openConnections).toBeLessThanOrEqual(2);
    // Once every pool has closed for idleness, nothing is counted open: a third project gets both.
    await until(() => sink.openConnections === 0, "the idle pools to close");
    const third = await Promise.all([0, 1].map((n) => transports.relay(of("c"), envelope(30 + n))));
    expect(third.map((r) => r.busy)).toEqual([undefined, undefined]);
  });

  it("a connection in use is never taken: at the cap with none idle, the delivery is given back", async () => {
    transports = new UpstreamTransports({ maxConnections: 1, maxUpstreamConnections: 1 });
    const of = (projectId: string) => ({ projectId, upstreamUrl: sink.url, password: undefined });
    let release: () => void = () => {};
    let atData = false;
    // Holds A's message at DATA until B has asked.
    sink.beforeDataReply = () =>
      new Promise((resolve) => {
        atData = true;
        release = resolve;
      });
    const held = transports.relay(of("a"), envelope(1));
    await until(() => atData, "A's message on the wire");
    const refused = await transports.relay(of("b"), envelope(2));
    expect(refused.busy).toMatchObject({ reason: "upstream_busy" });
    release();
    expect((await held).verdict.outcome).toBe("delivered");
  });
});
