import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

/**
 * Duplicate suppression over real SMTP sessions (docs/rules.md, Duplicates): a project's
 * `dedupWindowSeconds` makes a resubmission answer `250 … queued as <first id>` and store nothing.
 */

let ctx: TestContext;
let smtp: RunningSmtp;
let metrics: Registry;
const children: ChildProcess[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ SMTP_AUTH_FAILURES_PER_IP: "1000" });
  metrics = createMetricsRegistry();
  smtp = await startSmtp(
    { ...ctx, log: createLogger({ level: "silent" }), metrics },
    { smtpPort: 0, smtpsPort: 0 },
  );
}, 60_000);

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await smtp?.stop();
  await ctx?.close();
});

/** A project whose window is `dedupWindowSeconds`, set before any session reads its policy. */
async function project(dedupWindowSeconds: number, input: Parameters<typeof createProjectFixture>[2] = {}) {
  const fixture = await createProjectFixture(ctx.db, ctx.config, input);
  await ctx.db.project.update({ where: { id: fixture.project.id }, data: { dedupWindowSeconds } });
  return fixture;
}

interface Transaction {
  from?: string;
  to?: string[];
  /** The DATA content as written on the wire (dot-stuffed, line ends as given), without the final dot. */
  data?: string;
}

const defaults = {
  from: "app@example.com",
  to: ["user@example.net"],
  data: "From: app@example.com\r\nMessage-ID: <order-1@example.com>\r\nSubject: Your receipt\r\n\r\nPaid.\r\n",
};

/** Opens a session and sends everything but the final dot; `finish` sends it and reads the reply. */
async function prepare(port: number, fixture: ProjectFixture, transaction: Transaction = {}) {
  const { from, to, data } = { ...defaults, ...transaction };
  const { client, auth } = await RawSmtp.session(port, fixture.smtp);
  expect(auth?.code).toBe(235);
  expect((await client.command(`MAIL FROM:<${from}>`)).code).toBe(250);
  for (const recipient of to) expect((await client.command(`RCPT TO:<${recipient}>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write(data);
  return {
    async finish() {
      client.write(".\r\n");
      const reply = await client.read(30_000);
      client.close();
      return reply;
    },
  };
}

async function send(fixture: ProjectFixture, transaction: Transaction = {}, port = smtp.ports.smtp) {
  return (await prepare(port, fixture, transaction)).finish();
}

/** The id of a `250 2.0.0 Ok: queued as <id>` reply (fails the test on any other reply). */
function queuedId(reply: { code: number; text: string }): string {
  expect(reply.code).toBe(250);
  const id = /^2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/.exec(reply.text)?.[1];
  expect(id).toBeDefined();
  return id as string;
}

const storedIds = async (projectId: string) =>
  (await ctx.db.message.findMany({ where: { projectId }, orderBy: { id: "asc" }, select: { id: true } })).map(
    (m) => m.id,
  );

const audits = (projectId: string, action: string) =>
  ctx.db.auditEvent.findMany({ where: { projectId, action }, orderBy: { id: "asc" } });

describe("a resubmission within the window", () => {
  it("from another connection: 250 with the first id, nothing stored, audited message.duplicate naming the first", async () => {
    const fixture = await project(3600);
    const duplicatesCounted = async () =>
      (await metrics.getSingleMetric("postern_smtp_messages_duplicate_total")?.get())?.values[0]?.value ?? 0;
    const first = queuedId(await send(fixture));
    const countedBefore = await duplicatesCounted();
    const second = await send(fixture);
    expect([second.code, second.text]).toEqual([250, `2.0.0 Ok: queued as ${first}`]);
    expect(await duplicatesCounted()).toBe(countedBefore + 1);

    expect(await storedIds(fixture.project.id)).toEqual([first]);
    expect(
      await ctx.db.messageRecipient.count({ where: { message: { projectId: fixture.project.id } } }),
    ).toBe(1);
    expect((await audits(fixture.project.id, "message.accepted")).length).toBe(1);
    const duplicate = await audits(fixture.project.id, "message.duplicate");
    expect(duplicate.map((a) => [a.actor, a.details])).toEqual([
      [
        `smtp:${fixture.smtp.username}`,
        expect.objectContaining({
          messageId: first,
          mailFrom: "app@example.com",
          recipients: ["user@example.net"],
        }),
      ],
    ]);
    // No event: nothing changed.
    expect(await ctx.db.messageEvent.count({ where: { projectId: fixture.project.id } })).toBe(1);
  });

  it("with the recipients in another order and case, and the message's bare LFs normalized, is the same submission", async () => {
    const fixture = await project(3600);
    const data = "From: app@example.com\r\nSubject: Stock\r\n\r\nline one\r\nline two\r\n";
    const first = queuedId(await send(fixture, { to: ["a@example.net", "b@example.net"], data }));
    const again = await send(fixture, {
      to: ["B@Example.net", "a@example.net"],
      data: data.replace("line one\r\n", "line one\n"),
    });
    expect(queuedId(again)).toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first]);
  });

  it("gives its recipients back to the quota: nothing of it will be sent", async () => {
    const fixture = await project(3600, { quotaPerMinute: 2 });
    const first = queuedId(await send(fixture));
    expect(queuedId(await send(fixture))).toBe(first);
    // Two recipients counted so far only if the duplicate kept its reservation.
    const other = queuedId(await send(fixture, { to: ["other@example.net"] }));
    expect(other).not.toBe(first);
  });

  it("concurrent identical submissions on ten connections: one stored, every one answered its id", async () => {
    const fixture = await project(3600);
    const sessions = await Promise.all(Array.from({ length: 10 }, () => prepare(smtp.ports.smtp, fixture)));
    // Every message is received; the final dots leave together, so their stores race.
    const replies = await Promise.all(sessions.map((s) => s.finish()));
    const ids = replies.map(queuedId);
    const stored = await storedIds(fixture.project.id);
    expect(stored.length).toBe(1);
    expect(new Set(ids)).toEqual(new Set(stored));
    expect((await audits(fixture.project.id, "message.accepted")).length).toBe(1);
    expect((await audits(fixture.project.id, "message.duplicate")).length).toBe(9);
  });
});

describe("stored again", () => {
  it("after the window has passed: a new id, which the fingerprint now names", async () => {
    const fixture = await project(1);
    const first = queuedId(await send(fixture));
    const row = await ctx.db.messageFingerprint.findFirstOrThrow({
      where: { projectId: fixture.project.id },
    });
    expect(row.messageId).toBe(first);
    expect(row.expiresAt.getTime() - row.createdAt.getTime()).toBe(1000);
    // Until the fingerprint's end has passed (the accept statement's time is this machine's clock).
    while (Date.now() <= row.expiresAt.getTime()) await new Promise((r) => setTimeout(r, 100));
    const second = queuedId(await send(fixture));
    expect(second).not.toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first, second]);
    const taken = await ctx.db.messageFingerprint.findMany({ where: { projectId: fixture.project.id } });
    expect(taken.map((f) => f.messageId)).toEqual([second]);
  });

  it("with a window of 0 (the default): both stored, no fingerprint kept", async () => {
    const fixture = await project(0);
    const first = queuedId(await send(fixture));
    const second = queuedId(await send(fixture));
    expect(second).not.toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first, second]);
    expect(await ctx.db.messageFingerprint.count({ where: { projectId: fixture.project.id } })).toBe(0);
  });

  it("with another sender, another recipient or other content: each stored", async () => {
    const fixture = await project(3600);
    const variants: Transaction[] = [
      {},
      { from: "billing@example.com" },
      { to: ["user@example.net", "copy@example.net"] },
      { to: ["someone-else@example.net"] },
      { data: defaults.data.replace("Paid.", "Paid!") },
      // The same bytes but one dot-stuffed line: unstuffed, the content differs by that dot.
      { data: defaults.data.replace("Paid.\r\n", "Paid.\r\n..\r\n") },
    ];
    const ids = [];
    for (const variant of variants) ids.push(queuedId(await send(fixture, variant)));
    expect(new Set(ids).size).toBe(variants.length);
    expect((await storedIds(fixture.project.id)).length).toBe(variants.length);
  });

  it("by another project sending the same message", async () => {
    const one = await project(3600);
    const two = await project(3600);
    const first = queuedId(await send(one));
    expect(queuedId(await send(two))).not.toBe(first);
  });
});

/** `postern start smtp` as a separate process; resolves with its SMTP port once it listens. */
function startPostern(): Promise<{ child: ChildProcess; port: number }> {
  const bin = resolve(import.meta.dirname, "../../cli/bin/postern.js");
  const child = spawn(process.execPath, [bin, "start", "smtp"], {
    env: { ...process.env, ...ctx.env, SMTP_PORT: "0", SMTPS_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  return new Promise((resolvePort, reject) => {
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const port = /SMTP\s+\S+:(\d+)/.exec(output)?.[1];
      if (port) resolvePort({ child, port: Number(port) });
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once("exit", (code) => reject(new Error(`postern exited with ${code}: ${output}`)));
  });
}

const killed = (child: ChildProcess) =>
  new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once("exit", () => done());
    child.kill("SIGKILL");
  });

describe("across a restart", () => {
  it("a resubmission after Postern was SIGKILLed and started again is answered with the first id", async () => {
    const fixture = await project(3600);
    const before = await startPostern();
    const first = queuedId(await send(fixture, {}, before.port));
    await killed(before.child);

    const after = await startPostern();
    const again = await send(fixture, {}, after.port);
    expect([again.code, again.text]).toEqual([250, `2.0.0 Ok: queued as ${first}`]);
    expect(await storedIds(fixture.project.id)).toEqual([first]);
    expect((await audits(fixture.project.id, "message.duplicate")).length).toBe(1);
    await killed(after.child);
  }, 60_000);
});
