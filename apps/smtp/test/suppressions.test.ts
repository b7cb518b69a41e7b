import { createSuppressionService, type SuppressionEntry } from "@postern/projects";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp, type Reply } from "./smtp-client";

/**
 * Suppressions end to end (docs/suppressions.md): RCPT refusals of suppressed recipients (that
 * recipient alone), and the worker's auto-suppression of a recipient the upstream answers 5.1.1
 * for. Real SMTP sessions into Postern, the real worker, an SMTP sink as the upstream.
 */

let ctx: TestContext;
let smtp: RunningSmtp;
let worker: RunningWorker;
let upstream: SmtpSink;

beforeAll(async () => {
  ctx = await createTestContext();
  const deps = { ...ctx, log: createLogger({ level: "silent" }) };
  smtp = await startSmtp({ ...deps, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({ ...deps, metrics: createMetricsRegistry() });
  upstream = await SmtpSink.start();
  upstream.rcptReply = (address) =>
    address.startsWith("nobody@") ? { code: 550, message: "5.1.1 no such user" } : undefined;
});

afterAll(async () => {
  await smtp?.stop();
  await worker?.stop();
  await upstream?.stop();
  await ctx?.close();
});

async function project(entries: SuppressionEntry[] = []): Promise<ProjectFixture> {
  const fixture = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
  if (entries.length > 0) {
    const service = createSuppressionService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
    expect(await service.add(fixture.project.id, entries, { actor: "test" })).toBeDefined();
  }
  return fixture;
}

/** One transaction; the replies to each RCPT, and the message id when one was accepted. */
async function send(fixture: ProjectFixture, to: string[]) {
  const { client } = await RawSmtp.session(smtp.ports.smtp, fixture.smtp);
  try {
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    const rcpt: Reply[] = [];
    for (const address of to) rcpt.push(await client.command(`RCPT TO:<${address}>`));
    if (!rcpt.some((r) => r.code === 250)) return { rcpt, id: "" };
    expect((await client.command("DATA")).code).toBe(354);
    client.write("From: <app@example.com>\r\nSubject: suppressions\r\n\r\nhello\r\n.\r\n");
    const data = await client.read();
    expect(data.code).toBe(250);
    return { rcpt, id: /queued as ([0-9a-f-]{36})$/.exec(data.text)?.[1] as string };
  } finally {
    client.close();
  }
}

async function finalOf(messageId: string) {
  await expect
    .poll(async () => (await ctx.db.message.findUniqueOrThrow({ where: { id: messageId } })).status, {
      timeout: 20_000,
    })
    .toMatch(/^(delivered|failed)$/);
  return ctx.db.message.findUniqueOrThrow({
    where: { id: messageId },
    include: { recipients: { orderBy: { address: "asc" } } },
  });
}

const delivered = (id: string) =>
  upstream.messages.filter((m) => m.raw.includes(id)).flatMap((m) => m.rcptTo);

describe("suppressions at RCPT", () => {
  it("refuses a suppressed recipient with 550 5.7.1 naming the reason; the others are delivered", async () => {
    const fixture = await project([{ address: "gone@example.net", reason: "hard_bounce" }]);
    const sent = await send(fixture, ["ok@example.net", "GONE@example.net", "other@example.net"]);
    expect(sent.rcpt.map((r) => [r.code, r.enhanced])).toEqual([
      [250, "2.1.5"],
      [550, "5.7.1"],
      [250, "2.1.5"],
    ]);
    expect(sent.rcpt[1]?.text).toBe("5.7.1 Recipient suppressed by the project (hard_bounce)");
    const message = await finalOf(sent.id);
    expect(message.status).toBe("delivered");
    expect(message.recipients.map((r) => r.address)).toEqual(["ok@example.net", "other@example.net"]);
    expect(delivered(sent.id).sort()).toEqual(["ok@example.net", "other@example.net"]);
    await expect
      .poll(() =>
        ctx.db.auditEvent.findMany({ where: { projectId: fixture.project.id, action: "message.rejected" } }),
      )
      .toEqual([
        expect.objectContaining({
          details: expect.objectContaining({
            reason: "suppressed",
            recipient: "GONE@example.net",
            suppression: "gone@example.net",
            suppressionReason: "hard_bounce",
          }),
        }),
      ]);
  });

  it("refuses every address of a *@domain suppression, and ignores an expired one", async () => {
    const fixture = await project([
      { address: "*@blocked.example", reason: "complaint" },
      { address: "old@example.net", reason: "hard_bounce", expiresAt: new Date(Date.now() - 60_000) },
    ]);
    const sent = await send(fixture, ["a@blocked.example", "b@Blocked.Example", "old@example.net"]);
    expect(sent.rcpt.map((r) => r.code)).toEqual([550, 550, 250]);
    expect(sent.rcpt[0]?.text).toBe(
      "5.7.1 Recipient suppressed by the project (complaint of *@blocked.example)",
    );
    const message = await finalOf(sent.id);
    expect(message.recipients.map((r) => r.address)).toEqual(["old@example.net"]);
  });

  it("a project with suppressions elsewhere refuses nothing of its own", async () => {
    await project([{ address: "someone@example.net", reason: "manual" }]);
    const fixture = await project();
    expect(fixture.project.suppressionsVersion).toBe(0);
    const sent = await send(fixture, ["someone@example.net"]);
    expect(sent.rcpt.map((r) => r.code)).toEqual([250]);
  });
});

describe("auto-suppression", () => {
  it("suppresses the recipient the upstream answered 5.1.1 for, and only that one; its next message is refused at RCPT", async () => {
    const fixture = await project();
    const sent = await send(fixture, ["nobody@example.net", "friend@example.net"]);
    const message = await finalOf(sent.id);
    expect(message.recipients.map((r) => [r.address, r.status, r.code])).toEqual([
      ["friend@example.net", "delivered", 250],
      ["nobody@example.net", "failed", 550],
    ]);
    expect(message.recipients[1]?.enhancedCode).toBe("5.1.1");
    const rows = await ctx.db.suppression.findMany({ where: { projectId: fixture.project.id } });
    expect(rows).toEqual([
      expect.objectContaining({
        address: "nobody@example.net",
        reason: "hard_bounce",
        sourceMessageId: sent.id,
        expiresAt: null,
      }),
    ]);
    // The worker announced it: the next transaction on a new session is refused at RCPT.
    await expect
      .poll(async () => (await send(fixture, ["nobody@example.net"])).rcpt[0]?.text, { timeout: 10_000 })
      .toBe("5.7.1 Recipient suppressed by the project (hard_bounce)");
    const again = await send(fixture, ["friend@example.net"]);
    expect(again.rcpt.map((r) => r.code)).toEqual([250]);
  });

  it("adds nothing when the project's autoSuppress is off", async () => {
    const fixture = await project();
    await ctx.db.project.update({ where: { id: fixture.project.id }, data: { autoSuppress: false } });
    const sent = await send(fixture, ["nobody@example.org"]);
    const message = await finalOf(sent.id);
    expect(message.recipients[0]).toMatchObject({ status: "failed", enhancedCode: "5.1.1" });
    expect(await ctx.db.suppression.count({ where: { projectId: fixture.project.id } })).toBe(0);
    expect(
      (await ctx.db.project.findUniqueOrThrow({ where: { id: fixture.project.id } })).suppressionsVersion,
    ).toBe(0);
  });
});
