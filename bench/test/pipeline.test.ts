import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator, Sink, smtpSinkInstalled } from "../children";
import type { Arrival, LoadSpec } from "../protocol";

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
});

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
