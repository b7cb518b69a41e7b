import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator } from "../children";
import { type Peer, startForwarder } from "../peers";
import type { LoadSpec } from "../protocol";

describe("the forwarder peer", () => {
  let upstream: SmtpSink;
  let forwarder: Peer;
  let load: LoadGenerator;
  beforeAll(async () => {
    upstream = await SmtpSink.start({ starttls: false });
    forwarder = await startForwarder({ sinkPort: upstream.port, freshLogins: 2 });
    load = new LoadGenerator();
  });
  afterAll(async () => {
    load.stop();
    await forwarder.stop();
    await upstream.stop();
  });

  const spec = (logins: LoadSpec["logins"]): LoadSpec => ({
    host: "127.0.0.1",
    ports: forwarder.smtpPorts,
    mode: "fresh",
    concurrency: 2,
    messageBytes: 10 * 1024,
    durationMs: 300,
    logins,
    from: "bench@bench.example",
    to: "sink@bench.example",
  });

  it("relays every message it accepts over STARTTLS and AUTH, and answers 250 once the sink has it", async () => {
    const result = await load.run(spec([forwarder.login as NonNullable<Peer["login"]>]));
    expect(result.errors).toBe(0);
    expect(result.accepted.length).toBeGreaterThan(0);
    // The 250 waits for the sink: every accepted message is already there.
    expect(upstream.messages).toHaveLength(result.accepted.length);
    expect(upstream.messages[0]?.rcptTo).toEqual(["sink@bench.example"]);
    expect(upstream.messages[0]?.raw.toString("latin1")).toMatch(/^X-Bench-Sent: \d+\r\n/);
    expect(upstream.messages[0]?.raw.length).toBeGreaterThan(10 * 1024);
  });

  it("refuses a wrong password and relays nothing", async () => {
    const before = upstream.messages.length;
    const result = await load.run(spec([{ username: "bench", password: "wrong" }]));
    expect(result.accepted).toHaveLength(0);
    expect(result.errors).toBeGreaterThan(0);
    expect(result.errorSamples.join(" ")).toMatch(/535/);
    expect(upstream.messages).toHaveLength(before);
  });
});
