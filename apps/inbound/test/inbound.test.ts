import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import type { Project } from "@postern/db";
import { type RunningInbound, startInbound } from "@postern/inbound";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import { createReturnPaths, type ReturnPaths } from "@postern/verp";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The inbound role as a reporting MTA meets it: a real SMTP session on a loopback port, reports
 * as Postfix's bounce daemon and RFC 5965 write them (test/fixtures), the result read from
 * PostgreSQL. Only the return path and the recipient addresses of the fixtures are rewritten.
 */

const bounceDomain = "bounces.example.com";
const maxReportBytes = 65_536;
const fixture = (name: string) => readFileSync(new URL(`fixtures/${name}`, import.meta.url), "latin1");
/** The return path make-postfix-dsn.ts sent with (and Postfix's DSN went to). */
const postfixReturnPath = `bounce+${"a".repeat(45)}@bounces.example.com`;

let ctx: TestContext;
let inbound: RunningInbound;
let metrics: Registry;
let paths: ReturnPaths;

beforeAll(async () => {
  ctx = await createTestContext({
    BOUNCE_DOMAIN: bounceDomain,
    INBOUND_MAX_MESSAGE_SIZE: String(maxReportBytes),
  });
  metrics = createMetricsRegistry();
  inbound = await startInbound({ ...ctx, log: createLogger({ level: "silent" }), metrics }, { port: 0 });
  paths = createReturnPaths({ encryptionKey: ctx.config.encryptionKey, bounceDomain });
});
afterAll(async () => {
  await inbound?.stop();
  await ctx?.close();
});

/** A message of a new project, accepted and delivered to each of `to` (the upstream said 250). */
async function deliveredMessage(to: string[], options: { autoSuppress?: boolean; delivered?: boolean } = {}) {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  if (options.autoSuppress === false)
    await ctx.db.project.update({ where: { id: project.id }, data: { autoSuppress: false } });
  const message = await createQueuedMessageFixture(ctx.db, project, { to });
  if (options.delivered !== false) {
    await ctx.db.message.update({ where: { id: message.id }, data: { status: "delivered", attempts: 1 } });
    await ctx.db.messageRecipient.updateMany({
      where: { messageId: message.id },
      data: { status: "delivered", code: 250, enhancedCode: "2.0.0", response: "250 2.0.0 ok" },
    });
  }
  return { project, message, returnPath: paths.addressFor(message.id) };
}

interface Sent {
  /** The reply to DATA, or to the first refused command. */
  code: number;
  response: string;
  /** Recipients refused at RCPT, with their reply. */
  refused: { address: string; code: number; response: string }[];
}

/** One SMTP transaction to the inbound role; `from` "" is the null sender, as bounces use. */
async function send(from: string, to: string[], raw: string): Promise<Sent> {
  const connection = new SMTPConnection({
    host: "127.0.0.1",
    port: inbound.port,
    secure: false,
    ignoreTLS: true,
  });
  await new Promise<void>((resolve, reject) => {
    connection.once("error", reject);
    connection.connect(() => resolve());
  });
  try {
    return await new Promise<Sent>((resolve) => {
      connection.send({ from, to }, raw.replace(/\r?\n/g, "\r\n"), (error, info) => {
        const rejected = (error ?? info) as unknown as {
          rejectedErrors?: { recipient: string; responseCode: number; response: string }[];
          responseCode?: number;
          response: string;
        };
        const refused = (rejected.rejectedErrors ?? []).map((e) => ({
          address: e.recipient,
          code: e.responseCode,
          response: e.response,
        }));
        if (error) resolve({ code: rejected.responseCode ?? 0, response: rejected.response ?? "", refused });
        else resolve({ code: 250, response: info.response, refused });
      });
    });
  } finally {
    connection.quit();
  }
}

const recipientsOf = async (messageId: string) =>
  Object.fromEntries(
    (await ctx.db.messageRecipient.findMany({ where: { messageId } })).map((r) => [
      r.address,
      { status: r.status, code: r.code, enhancedCode: r.enhancedCode },
    ]),
  );
const suppressionsOf = (project: Project) =>
  ctx.db.suppression.findMany({ where: { projectId: project.id }, orderBy: { address: "asc" } });
const eventsOf = (messageId: string, type: string) =>
  ctx.db.messageEvent.findMany({ where: { messageId, type }, orderBy: { id: "asc" } });
const counter = async (name: string, labels: Record<string, string>) => {
  const metric = (await metrics.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
};

describe("a delivery status notification written by Postfix", () => {
  const dsn = fixture("postfix-dsn.eml");

  it("marks the failed recipient bounced, suppresses it and writes the event; the other recipient is untouched", async () => {
    const { project, message, returnPath } = await deliveredMessage(["gone@example.net", "kept@example.net"]);
    const report = dsn.replaceAll(postfixReturnPath, returnPath);
    const sent = await send("", [returnPath], report);
    expect(sent).toMatchObject({ code: 250, refused: [] });
    expect(sent.response).toMatch(/^250 2\.0\.0 Ok: report recorded/);

    expect(await recipientsOf(message.id)).toEqual({
      "gone@example.net": { status: "bounced", code: 550, enhancedCode: "5.1.1" },
      "kept@example.net": { status: "delivered", code: 250, enhancedCode: "2.0.0" },
    });
    const suppressions = await suppressionsOf(project);
    expect(suppressions).toMatchObject([
      { address: "gone@example.net", reason: "hard_bounce", sourceMessageId: message.id, expiresAt: null },
    ]);
    const [event, ...more] = await eventsOf(message.id, "message.bounced");
    expect(more).toEqual([]);
    expect(event?.projectId).toBe(project.id);
    expect(event?.data).toMatchObject({
      recipients: [
        {
          address: "gone@example.net",
          status: "bounced",
          code: 550,
          enhancedCode: "5.1.1",
          response: expect.stringContaining("5.1.1"),
        },
      ],
      report: { type: "delivery-status", reportingMta: "mta.example.org" },
    });
    const audit = await ctx.db.auditEvent.findMany({ where: { projectId: project.id } });
    expect(audit.map((a) => a.action)).toEqual(
      expect.arrayContaining(["message.bounced", "suppression.added"]),
    );
    expect(await counter("postern_inbound_reports_total", { outcome: "bounced" })).toBeGreaterThanOrEqual(1);

    // The reporting MTA sends it again (it lost our 250): accepted, nothing new written.
    expect((await send("", [returnPath], report)).code).toBe(250);
    expect(await eventsOf(message.id, "message.bounced")).toHaveLength(1);
    expect(await suppressionsOf(project)).toHaveLength(1);
  });

  it("marks without suppressing when the project's autoSuppress is off", async () => {
    const { project, message, returnPath } = await deliveredMessage(
      ["gone@example.net", "kept@example.net"],
      {
        autoSuppress: false,
      },
    );
    expect((await send("", [returnPath], dsn.replaceAll(postfixReturnPath, returnPath))).code).toBe(250);
    expect((await recipientsOf(message.id))["gone@example.net"]?.status).toBe("bounced");
    expect(await suppressionsOf(project)).toEqual([]);
  });

  it("answers 451 while the recipient's delivery is not recorded yet, so the reporting MTA retries", async () => {
    const { message, returnPath } = await deliveredMessage(["gone@example.net"], { delivered: false });
    const sent = await send("", [returnPath], dsn.replaceAll(postfixReturnPath, returnPath));
    expect(sent.code).toBe(451);
    expect(sent.response).toMatch(/^451 4\.3\.0 /);
    expect((await recipientsOf(message.id))["gone@example.net"]?.status).toBe("pending");
  });

  it("counts a delay notice and marks nothing", async () => {
    const { message, returnPath } = await deliveredMessage(["gone@example.net"]);
    const delayed = dsn
      .replaceAll(postfixReturnPath, returnPath)
      .replace(/^Action: failed$/m, "Action: delayed")
      .replace(/^Status: 5\.1\.1$/m, "Status: 4.4.1");
    expect(delayed).toMatch(/^Action: delayed\r?$/m);
    expect((await send("", [returnPath], delayed)).code).toBe(250);
    expect((await recipientsOf(message.id))["gone@example.net"]?.status).toBe("delivered");
    expect(await eventsOf(message.id, "message.bounced")).toEqual([]);
    expect(await counter("postern_inbound_reports_total", { outcome: "delayed" })).toBe(1);
  });
});

describe("a feedback report (RFC 5965 Appendix B.2)", () => {
  const arf = fixture("rfc5965-arf.eml");

  it("sent to the feedback-loop address, finds the message by Original-Mail-From and marks the complainant alone", async () => {
    const { project, message, returnPath } = await deliveredMessage([
      "reader@example.net",
      "other@example.net",
    ]);
    const report = arf
      .replaceAll("somespammer@example.net", returnPath)
      .replaceAll("user@example.com", "reader@example.net");
    const sent = await send("abusedesk@example.com", [`abuse@${bounceDomain}`], report);
    expect(sent.code).toBe(250);

    expect(await recipientsOf(message.id)).toEqual({
      "reader@example.net": { status: "complained", code: null, enhancedCode: null },
      "other@example.net": { status: "delivered", code: 250, enhancedCode: "2.0.0" },
    });
    expect(await suppressionsOf(project)).toMatchObject([
      { address: "reader@example.net", reason: "complaint", sourceMessageId: message.id },
    ]);
    const [event] = await eventsOf(message.id, "message.complained");
    expect(event?.data).toMatchObject({
      recipients: [
        {
          address: "reader@example.net",
          status: "complained",
          response: "feedback report: abuse (SomeGenerator/1.0)",
        },
      ],
      report: {
        type: "feedback-report",
        feedbackType: "abuse",
        userAgent: "SomeGenerator/1.0",
        sourceIp: "192.0.2.1",
      },
    });
  });

  it("sent to the return path of a one-recipient message, marks that recipient whatever Original-Rcpt-To says", async () => {
    const { message, returnPath } = await deliveredMessage(["only@example.net"]);
    const report = arf.replaceAll("somespammer@example.net", returnPath);
    expect((await send("abusedesk@example.com", [returnPath], report)).code).toBe(250);
    expect((await recipientsOf(message.id))["only@example.net"]?.status).toBe("complained");
  });

  it("matches nothing through a forged Original-Mail-From: kept for the operator, no recipient marked", async () => {
    const { message } = await deliveredMessage(["reader@example.net"]);
    const forged = createReturnPaths({ encryptionKey: randomBytes(32), bounceDomain }).addressFor(message.id);
    const report = arf
      .replaceAll("somespammer@example.net", forged)
      .replaceAll("user@example.com", "reader@example.net");
    const sent = await send("abusedesk@example.com", [`abuse@${bounceDomain}`], report);
    expect(sent.code).toBe(250);
    expect(sent.response).toMatch(/kept for the operator/);
    expect((await recipientsOf(message.id))["reader@example.net"]?.status).toBe("delivered");
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { action: "inbound.unmatched" },
      orderBy: { id: "desc" },
    });
    expect(audit.details).toMatchObject({ reason: "forged_return_path", report: "feedback-report" });
  });

  it("does not take `not-spam` for a complaint", async () => {
    const { message, returnPath } = await deliveredMessage(["reader@example.net"]);
    const report = arf
      .replaceAll("somespammer@example.net", returnPath)
      .replace("Feedback-Type: abuse", "Feedback-Type: not-spam");
    expect((await send("abusedesk@example.com", [returnPath], report)).code).toBe(250);
    expect((await recipientsOf(message.id))["reader@example.net"]?.status).toBe("delivered");
  });
});

describe("the session", () => {
  it("offers STARTTLS and SIZE, never AUTH", async () => {
    const socket = connect(inbound.port, "127.0.0.1");
    let received = "";
    socket.on("data", (data) => (received += data.toString()));
    const replyEnding = async (pattern: RegExp) => {
      while (!pattern.test(received)) await new Promise((resolve) => setTimeout(resolve, 10));
    };
    await replyEnding(/^220 .*\r\n/m);
    socket.write("EHLO reporter.example\r\n");
    await replyEnding(/^250 .*\r\n/m);
    socket.destroy();
    expect(received).toMatch(/^250-STARTTLS\r$/m);
    expect(received).toMatch(new RegExp(`^250[- ]SIZE ${maxReportBytes}\\r$`, "m"));
    expect(received).not.toMatch(/AUTH/);
  });

  it("takes one return path per transaction: another message's waits for a transaction of its own", async () => {
    const first = await deliveredMessage(["a@example.net"]);
    const second = await deliveredMessage(["b@example.net"]);
    const sent = await send("", [first.returnPath, second.returnPath], "Subject: x\r\n\r\nx\r\n");
    expect(sent.refused).toMatchObject([{ address: second.returnPath, code: 452 }]);
    expect(sent.refused[0]?.response).toMatch(/^452 4\.5\.3 /);
    expect(sent.code).toBe(250);
  });
});

describe("what the inbound role refuses", () => {
  it("refuses mail for any other domain (no open relay), a forged return path and a mailbox that does not exist", async () => {
    const { returnPath } = await deliveredMessage(["gone@example.net"]);
    const otherKey = createReturnPaths({ encryptionKey: randomBytes(32), bounceDomain });
    const forged = otherKey.addressFor(randomUUID());
    const [local] = returnPath.split("@");
    const sent = await send(
      "",
      ["someone@example.org", `${local}@example.org`, forged, `info@${bounceDomain}`],
      "Subject: x\r\n\r\nx\r\n",
    );
    expect(sent.refused.map((r) => [r.address, r.response.slice(0, 9)])).toEqual([
      ["someone@example.org", "550 5.7.1"],
      [`${local}@example.org`, "550 5.7.1"],
      [forged, "550 5.7.1"],
      [`info@${bounceDomain}`, "550 5.1.1"],
    ]);
    expect(await counter("postern_inbound_recipients_refused_total", { reason: "other_domain" })).toBe(2);
    expect(await counter("postern_inbound_recipients_refused_total", { reason: "forged" })).toBe(1);
  });

  it("refuses an authentic return path whose message is gone", async () => {
    const gone = paths.addressFor(randomUUID());
    const sent = await send("", [gone], "Subject: x\r\n\r\nx\r\n");
    expect(sent.refused).toMatchObject([{ address: gone, code: 550 }]);
    expect(sent.refused[0]?.response).toMatch(/^550 5\.1\.1 /);
  });

  it("refuses a report larger than INBOUND_MAX_MESSAGE_SIZE with 552 and stores nothing", async () => {
    const { message, returnPath } = await deliveredMessage(["gone@example.net"]);
    const report = fixture("postfix-dsn.eml").replaceAll(postfixReturnPath, returnPath);
    const padded = report.replace(
      "\r\n\r\n",
      `\r\nX-Padding: ${"x".repeat(70)}\r\n`.repeat(1000).concat("\r\n"),
    );
    const sent = await send("", [returnPath], padded);
    expect(sent.code).toBe(552);
    expect((await recipientsOf(message.id))["gone@example.net"]?.status).toBe("delivered");
  });
});

describe("mail it cannot match", () => {
  it("is accepted, counted and audited: an auto-reply to a return path, a report to postmaster with no return path", async () => {
    const { project, message, returnPath } = await deliveredMessage(["reader@example.net"]);
    const before = {
      notAReport: await counter("postern_inbound_unmatched_total", { reason: "not_a_report" }),
      noReturnPath: await counter("postern_inbound_unmatched_total", { reason: "no_return_path" }),
    };
    const autoReply = [
      "From: reader@example.net",
      "Subject: Out of office",
      "Auto-Submitted: auto-replied",
      "",
      "Back on Monday.",
      "",
    ].join("\r\n");
    const sent = await send("reader@example.net", [returnPath], autoReply);
    expect(sent.code).toBe(250);
    expect(sent.response).toMatch(/kept for the operator/);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: project.id, action: "inbound.unmatched" },
    });
    expect(audit.details).toMatchObject({
      reason: "not_a_report",
      messageId: message.id,
      mailFrom: "reader@example.net",
      rcptTo: [returnPath],
      subject: "Out of office",
    });
    expect((await recipientsOf(message.id))["reader@example.net"]?.status).toBe("delivered");

    const orphan = fixture("postfix-dsn.eml").replaceAll(postfixReturnPath, `nobody@${bounceDomain}`);
    expect((await send("", [`postmaster@${bounceDomain}`], orphan)).code).toBe(250);
    const unowned = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: null, action: "inbound.unmatched" },
      orderBy: { id: "desc" },
    });
    expect(unowned.details).toMatchObject({ reason: "no_return_path", report: "delivery-status" });
    expect(await counter("postern_inbound_unmatched_total", { reason: "not_a_report" })).toBe(
      before.notAReport + 1,
    );
    expect(await counter("postern_inbound_unmatched_total", { reason: "no_return_path" })).toBe(
      before.noReturnPath + 1,
    );
  });
});
