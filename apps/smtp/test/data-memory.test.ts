import { Writable } from "node:stream";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { createDataBudget } from "../src/data-budget";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext | undefined;
let smtp: RunningSmtp | undefined;
const clients: RawSmtp[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await smtp?.stop();
  smtp = undefined;
  await ctx?.close();
  ctx = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const settlesWithin = (promise: Promise<unknown>, ms: number) =>
  Promise.race([promise.then(() => true), sleep(ms).then(() => false)]);

describe("the data budget", () => {
  it("bounds what the others hold beside the oldest holder, queues the rest in order, and lets the oldest go over", async () => {
    const budget = createDataBudget(100);
    const [a, b, c, d] = [budget.holder(), budget.holder(), budget.holder(), budget.holder()];
    // a is the oldest holder: its bytes do not count against the bound the others share.
    expect(a.take(60)).toBeUndefined();
    expect(b.take(60)).toBeUndefined();
    const cWaits = c.take(50);
    expect(cWaits).toBeInstanceOf(Promise);
    // d would fit beside b, but c came first.
    const dWaits = d.take(30);
    expect(dWaits).toBeInstanceOf(Promise);
    // a goes on over the bound.
    expect(a.take(100)).toBeUndefined();
    expect(budget.held()).toBe(220);
    a.release();
    // b is the oldest now: c and d share the bound.
    await cWaits;
    await dWaits;
    expect(budget.held()).toBe(140);
    b.release();
    c.release();
    d.release();
    c.release();
    expect(budget.held()).toBe(0);
  });

  it("does not hold the others back while the oldest holder is over the bound", async () => {
    // A large message from a slow client: the oldest holder, far over the bound, for as long as
    // its client takes. The others still share the whole bound.
    const budget = createDataBudget(100);
    const [slow, b, c] = [budget.holder(), budget.holder(), budget.holder()];
    expect(slow.take(150)).toBeUndefined();
    expect(b.take(60)).toBeUndefined();
    const cWaits = c.take(50);
    expect(await settlesWithin(cWaits as Promise<void>, 50)).toBe(false);
    b.release();
    await cWaits;
    expect(budget.held()).toBe(200);
  });

  it("gives a message larger than the bound its bytes once nobody else holds any", async () => {
    const budget = createDataBudget(10);
    const [a, b] = [budget.holder(), budget.holder()];
    expect(a.take(5)).toBeUndefined();
    const bWaits = b.take(50);
    expect(await settlesWithin(bWaits as Promise<void>, 50)).toBe(false);
    a.release();
    await bWaits;
    expect(budget.held()).toBe(50);
    // With nothing held, such a message goes at once.
    expect(createDataBudget(10).holder().take(50)).toBeUndefined();
  });

  it("lets a waiting holder that becomes the oldest go first, over the bound, and stop counting against the others", async () => {
    const budget = createDataBudget(100);
    const [a, b, c] = [budget.holder(), budget.holder(), budget.holder()];
    a.take(50);
    b.take(80);
    const cWaits = c.take(30);
    const bWaits = b.take(80);
    expect(await settlesWithin(bWaits as Promise<void>, 50)).toBe(false);
    a.release();
    // b is now the oldest: it goes on to 160 bytes, and c fits beside it.
    await bWaits;
    await cWaits;
    expect(budget.held()).toBe(190);
  });

  it("admits a new message for the size messages have had lately, so the bound holds whole messages rather than parts of many", async () => {
    const budget = createDataBudget(1_000);
    for (let i = 0; i < 24; i++) {
      const earlier = budget.holder();
      earlier.take(300);
      earlier.release();
    }
    // The average is now 288 bytes (300 × (1 − (7/8)^24)): each new session's first take asks for that.
    const [a, b, c, d, e] = [
      budget.holder(),
      budget.holder(),
      budget.holder(),
      budget.holder(),
      budget.holder(),
    ];
    expect(a.take(10)).toBeUndefined();
    expect(b.take(10)).toBeUndefined();
    expect(c.take(10)).toBeUndefined();
    expect(d.take(10)).toBeUndefined();
    expect(budget.held()).toBe(4 * 288);
    // b, c and d hold 864 of the 1,000 beside the oldest (a): a fourth message does not fit whole.
    const eWaits = e.take(10);
    expect(eWaits).toBeInstanceOf(Promise);
    // What b was given ahead covers the rest of its message: it never waits for it.
    expect(b.take(250)).toBeUndefined();
    expect(b.take(28)).toBeUndefined();
    // Past it, b takes chunk by chunk as before.
    expect(b.take(5)).toBeInstanceOf(Promise);
    c.release();
    await eWaits;
    expect(budget.held()).toBe(4 * 288 + 5);
  });
});

interface Started {
  ctx: TestContext;
  smtp: RunningSmtp;
  metrics: Registry;
}

async function start(env: Record<string, string>): Promise<Started> {
  const c = await createTestContext(env);
  ctx = c;
  const metrics = createMetricsRegistry();
  const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });
  const s = await startSmtp(
    { ...c, log: createLogger({ level: "warn" }, quiet), metrics },
    { smtpPort: 0, smtpsPort: 0 },
  );
  smtp = s;
  return { ctx: c, smtp: s, metrics };
}

/** A session of a new project that has sent DATA and had 354. */
async function inData(started: Started) {
  const { smtp: auth } = await createProjectFixture(started.ctx.db, started.ctx.config);
  const { client, auth: reply } = await RawSmtp.session(started.smtp.ports.smtp, auth);
  clients.push(client);
  expect(reply?.code).toBe(235);
  client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
  for (const expected of [250, 250, 354]) expect((await client.read()).code).toBe(expected);
  return client;
}

/** A message of `bytes` bytes: a header, then lines of 'x'. */
function body(bytes: number, subject: string): string {
  const head = `Subject: ${subject}\r\n\r\n`;
  const line = `${"x".repeat(98)}\r\n`;
  const lines = line.repeat(Math.ceil((bytes - head.length) / line.length));
  return (head + lines).slice(0, bytes - 2) + "\r\n";
}

async function sample(metrics: Registry, series: string): Promise<number> {
  const line = (await metrics.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
  expect(line, series).toBeDefined();
  return Number(line?.slice(series.length + 1));
}

/** The stored messages by subject, as text. */
async function stored(c: TestContext): Promise<Record<string, string>> {
  const messages = await c.db.message.findMany({ include: { body: true } });
  return Object.fromEntries(
    messages.map((m) => {
      const data = Buffer.from(m.body?.data ?? []).toString("latin1");
      return [/Subject: (\w+)/.exec(data)?.[1] ?? "?", data];
    }),
  );
}

describe("SMTP_DATA_MEMORY", () => {
  it("holds a session's DATA while others hold the memory, then stores every message whole", async () => {
    const started = await start({ SMTP_DATA_MEMORY: "65536" });
    const first = await inData(started);
    const second = await inData(started);
    // Over two of readMessageData's blocks and a part of one.
    const firstBody = body(600_000, "first");
    const secondBody = body(100_000, "second");

    // The first session holds about 48 KiB; the second cannot fit its 100 KB beside it.
    first.write(firstBody.slice(0, 49_152));
    await sleep(300);
    second.write(`${secondBody}.\r\n`);
    const secondReply = second.read(20_000);
    expect(await settlesWithin(secondReply, 1_000)).toBe(false);
    expect(await sample(started.metrics, "postern_smtp_data_memory_waits_total")).toBeGreaterThanOrEqual(1);
    // The second holds what fits in the bound; the first, the oldest holder, is not counted in it.
    const held = await sample(started.metrics, "postern_smtp_data_memory_bytes");
    expect(held).toBeGreaterThan(49_152);
    expect(held).toBeLessThanOrEqual(49_152 + 1_000 + 65_536);

    // The first session, the oldest holder, goes on past the bound; once stored, the second goes on.
    first.write(`${firstBody.slice(49_152)}.\r\n`);
    expect((await first.read(20_000)).code).toBe(250);
    expect((await secondReply).code).toBe(250);
    expect(await sample(started.metrics, "postern_smtp_data_memory_bytes")).toBe(0);

    // Each stored message is Postern's Received header followed by the client's bytes.
    const messages = await stored(started.ctx);
    for (const [text, sent] of [
      [messages.first, firstBody],
      [messages.second, secondBody],
    ]) {
      expect(text?.startsWith("Received: from ")).toBe(true);
      expect(text?.endsWith(`\r\n${sent}`)).toBe(true);
      expect(text?.length).toBeLessThan((sent?.length ?? 0) + 1_000);
    }
  });

  it("stores another session's message while the oldest holder sits over the bound", async () => {
    const started = await start({ SMTP_DATA_MEMORY: "65536" });
    const slow = await inData(started);
    const quick = await inData(started);
    // A client that has sent 100 KB of a larger message and goes on slowly: over the bound.
    slow.write(body(300_000, "slow").slice(0, 100_000));
    await sleep(300);
    expect(await sample(started.metrics, "postern_smtp_data_memory_bytes")).toBeGreaterThan(65_536);
    quick.write(`${body(10_000, "quick")}.\r\n`);
    expect((await quick.read(5_000)).code).toBe(250);
    expect(Object.keys(await stored(started.ctx))).toEqual(["quick"]);
  });

  it("frees the memory of a session that disconnects in the middle of DATA", async () => {
    const started = await start({ SMTP_DATA_MEMORY: "65536" });
    const gone = await inData(started);
    const waiting = await inData(started);
    gone.write(body(200_000, "gone").slice(0, 60_000));
    await sleep(300);
    waiting.write(`${body(100_000, "kept")}.\r\n`);
    const reply = waiting.read(20_000);
    expect(await settlesWithin(reply, 1_000)).toBe(false);

    gone.close();
    expect((await reply).code).toBe(250);
    expect(await sample(started.metrics, "postern_smtp_data_memory_bytes")).toBe(0);
    expect(Object.keys(await stored(started.ctx))).toEqual(["kept"]);
  });
});
