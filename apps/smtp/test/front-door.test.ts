import { publishAuthInvalidation } from "@postern/auth";
import { deliveryQueueName } from "@postern/queue";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  captureLog,
  createCredentialFixture,
  createProjectFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import { Queue } from "bullmq";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext;
let smtp: RunningSmtp;
let metrics: Registry;
/** Everything the SMTP role logged, at debug level, to search for secrets. */
let captured = captureLog("debug");
const secretsSeen: string[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ MAX_MESSAGE_SIZE: "20000", SMTP_AUTH_FAILURES_PER_IP: "1000" });
  metrics = createMetricsRegistry();
  captured = captureLog("debug");
  smtp = await startSmtp({ ...ctx, log: captured.log, metrics }, { smtpPort: 0, smtpsPort: 0 });
});

afterAll(async () => {
  await smtp?.stop();
  await ctx?.close();
});

async function project(input: Parameters<typeof createProjectFixture>[2] = {}) {
  const fixture = await createProjectFixture(ctx.db, ctx.config, input);
  secretsSeen.push(fixture.smtp.password);
  return fixture;
}

function mailer(auth: { username: string; password: string }, options: { secure?: boolean } = {}) {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: options.secure ? smtp.ports.smtps : smtp.ports.smtp,
    secure: options.secure ?? false,
    name: "client.test",
    requireTLS: !options.secure,
    auth: { user: auth.username, pass: auth.password },
    tls: { rejectUnauthorized: false },
  });
}

function message(overrides: Record<string, unknown> = {}) {
  return {
    from: "app@example.com",
    to: "someone@example.org",
    subject: "Hello",
    text: "Hello there",
    ...overrides,
  };
}

/** The SMTP error nodemailer reports, as "code enhanced". */
async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    const e = error as { responseCode?: number; response?: string };
    return `${e.responseCode} ${e.response?.slice(4, 4 + (e.response?.slice(4).indexOf(" ") ?? 0))}`;
  }
  throw new Error("expected a refusal");
}

async function auditEvents(projectId: string | null, action: string) {
  // Refusal audits are written off the reply path, a few milliseconds later.
  for (let i = 0; i < 50; i++) {
    const rows = await ctx.db.auditEvent.findMany({ where: { projectId, action }, orderBy: { id: "asc" } });
    if (rows.length > 0) return rows;
    await new Promise((r) => setTimeout(r, 20));
  }
  return [];
}

describe("greeting and TLS", () => {
  it("greets with the hostname and advertises AUTH only after STARTTLS", async () => {
    const { client, banner } = await RawSmtp.connect(smtp.ports.smtp);
    expect(banner.code).toBe(220);
    expect(banner.text).toContain("postern.test");
    const before = await client.command("EHLO client.test");
    expect(before.lines).toEqual(
      expect.arrayContaining(["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS", "SIZE 20000"]),
    );
    expect(before.lines.some((l) => l.startsWith("AUTH"))).toBe(false);
    await client.starttls();
    const after = await client.command("EHLO client.test");
    expect(after.lines).toContain("AUTH PLAIN LOGIN");
    expect(after.lines).not.toContain("STARTTLS");
    client.close();
  });

  it("greets without a pause: a client that speaks before the greeting is answered, not refused", async () => {
    // smtp-server's default holds the greeting 100 ms and answers such a client 421 "You talk too soon".
    const { client, banner } = await RawSmtp.connect(smtp.ports.smtp, { firstBytes: "EHLO early.test\r\n" });
    expect(banner.code).toBe(220);
    const ehlo = await client.read();
    expect(ehlo.code).toBe(250);
    expect(ehlo.lines).toContain("STARTTLS");
    client.close();
  });

  it("refuses AUTH before TLS with 538 5.7.11", async () => {
    const { client } = await RawSmtp.connect(smtp.ports.smtp);
    await client.command("EHLO client.test");
    const reply = await client.authPlain("pst_smtp_x", "pst_secret_y");
    expect([reply.code, reply.enhanced]).toEqual([538, "5.7.11"]);
    client.close();
  });

  it("refuses MAIL and RCPT before AUTH with 530 5.7.0, with or without TLS", async () => {
    const { client } = await RawSmtp.connect(smtp.ports.smtp);
    await client.command("EHLO client.test");
    const mail = await client.command("MAIL FROM:<a@example.com>");
    expect([mail.code, mail.enhanced]).toEqual([530, "5.7.0"]);
    await client.starttls();
    await client.command("EHLO client.test");
    const mail2 = await client.command("MAIL FROM:<a@example.com>");
    expect([mail2.code, mail2.enhanced]).toEqual([530, "5.7.0"]);
    const rcpt = await client.command("RCPT TO:<b@example.com>");
    expect([rcpt.code, rcpt.enhanced]).toEqual([530, "5.7.0"]);
    client.close();
  });

  it("accepts over implicit TLS (SMTPS) with TLS 1.2 or newer", async () => {
    const { smtp: auth } = await project();
    const info = await mailer(auth, { secure: true }).sendMail(message());
    expect(info.response).toMatch(/^250 2\.0\.0 .*queued as [0-9a-f-]{36}$/);
    const { client } = await RawSmtp.connect(smtp.ports.smtps as number, { tls: true });
    const socket = (client as unknown as { socket: import("node:tls").TLSSocket }).socket;
    expect(["TLSv1.2", "TLSv1.3"]).toContain(socket.getProtocol());
    client.close();
  });
});

describe("AUTH", () => {
  it("rejects a wrong secret and an unknown key with 535 5.7.8, and audits both", async () => {
    const { project: p, smtp: auth } = await project();
    const bad = await RawSmtp.session(smtp.ports.smtp, {
      username: auth.username,
      password: "pst_secret_wrong",
    });
    expect([bad.auth?.code, bad.auth?.enhanced]).toEqual([535, "5.7.8"]);
    bad.client.close();
    // Shaped like an API key, so audited as it is (anything else only by its length).
    const unknownKey = `pst_smtp_${"doesnotexist".padEnd(32, "0")}`;
    const unknown = await RawSmtp.session(smtp.ports.smtp, {
      username: unknownKey,
      password: auth.password,
    });
    expect([unknown.auth?.code, unknown.auth?.enhanced]).toEqual([535, "5.7.8"]);
    unknown.client.close();
    const failures = await auditEvents(p.id, "auth.failure");
    expect(failures[0]?.details).toMatchObject({ reason: "bad_secret", username: auth.username });
    expect(failures[0]?.ip).toBe("127.0.0.1");
    const unknownFailures = await auditEvents(null, "auth.failure");
    expect(unknownFailures.map((e) => e.details)).toContainEqual(
      expect.objectContaining({ reason: "unknown_key", username: unknownKey }),
    );
  });

  it("accepts AUTH LOGIN as well as PLAIN", async () => {
    const { smtp: auth } = await project();
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: smtp.ports.smtp,
      requireTLS: true,
      auth: { user: auth.username, pass: auth.password, method: "LOGIN" },
      tls: { rejectUnauthorized: false },
    });
    expect((await transport.sendMail(message())).response).toMatch(/^250 2\.0\.0/);
  });

  it("a credential revoked through the API's invalidation fails the next AUTH, without restart", async () => {
    const { smtp: auth } = await project();
    expect((await mailer(auth).sendMail(message())).response).toMatch(/^250/);
    // The verification is cached now; the revocation must still take effect at once.
    await ctx.db.smtpCredential.update({ where: { id: auth.credentialId }, data: { revokedAt: new Date() } });
    await publishAuthInvalidation(ctx.redis, ctx.redisKeyPrefix, {
      kind: "credential",
      credentialId: auth.credentialId,
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(await refusal(mailer(auth).sendMail(message()))).toBe("535 5.7.8");
  });

  it("a live session whose credential is revoked cannot start another transaction", async () => {
    const { smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    await ctx.db.smtpCredential.update({ where: { id: auth.credentialId }, data: { revokedAt: new Date() } });
    await publishAuthInvalidation(ctx.redis, ctx.redisKeyPrefix, {
      kind: "credential",
      credentialId: auth.credentialId,
    });
    await new Promise((r) => setTimeout(r, 100));
    const mail = await client.command("MAIL FROM:<app@example.com>");
    expect([mail.code, mail.enhanced]).toEqual([550, "5.7.1"]);
    client.close();
  });

  it("refuses a credential of a suspended project with 535 5.7.8, and a suspension of a live session at MAIL", async () => {
    const suspended = await project({ status: "suspended" });
    expect(await refusal(mailer(suspended.smtp).sendMail(message()))).toBe("535 5.7.8");
    expect((await auditEvents(suspended.project.id, "auth.failure"))[0]?.details).toMatchObject({
      reason: "suspended",
    });

    const live = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, live.smtp);
    await ctx.db.project.update({ where: { id: live.project.id }, data: { status: "suspended" } });
    await publishAuthInvalidation(ctx.redis, ctx.redisKeyPrefix, {
      kind: "project",
      projectId: live.project.id,
    });
    await new Promise((r) => setTimeout(r, 100));
    const mail = await client.command("MAIL FROM:<app@example.com>");
    expect([mail.code, mail.enhanced]).toEqual([550, "5.7.1"]);
    client.close();
  });

  it("never writes the secret in the audit log, even when the client swaps username and secret", async () => {
    const { project: p, smtp: auth } = await project();
    const swapped = await RawSmtp.session(smtp.ports.smtp, {
      username: auth.password,
      password: auth.username,
    });
    expect(swapped.auth?.code).toBe(535);
    swapped.client.close();
    const all = await ctx.db.auditEvent.findMany();
    expect(JSON.stringify(all, (_k, v) => (typeof v === "bigint" ? v.toString() : v))).not.toContain(
      auth.password,
    );
    expect(p.id).toBeDefined();
  });
});

describe("envelope policy", () => {
  it("refuses a sender outside the project's sender domains with 553 5.7.1 and audits it", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["example.com"] });
    expect(await refusal(mailer(auth).sendMail(message({ from: "app@evil.test" })))).toBe("553 5.7.1");
    const rejected = await auditEvents(p.id, "message.rejected");
    expect(rejected[0]?.details).toMatchObject({ reason: "sender_domain", mailFrom: "app@evil.test" });
    // Subdomains of an allowed domain are allowed.
    expect((await mailer(auth).sendMail(message({ from: "app@mail.example.com" }))).response).toMatch(/^250/);
  });

  it("refuses a header From outside the sender domains with 550 5.7.1 after DATA", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["example.com"] });
    const sent = mailer(auth).sendMail({
      ...message({ from: "Boss <boss@evil.test>" }),
      envelope: { from: "app@example.com", to: "someone@example.org" },
    });
    expect(await refusal(sent)).toBe("550 5.7.1");
    expect((await auditEvents(p.id, "message.rejected"))[0]?.details).toMatchObject({
      reason: "header_from",
      headerFrom: "boss@evil.test",
    });
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
  });

  it("with sender domains, refuses a message without a From header with 550 5.7.1", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["example.com"] });
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    await client.read();
    await client.read();
    await client.read();
    client.write("Subject: no from\r\n\r\nbody\r\n.\r\n");
    const reply = await client.read();
    expect([reply.code, reply.enhanced]).toEqual([550, "5.7.1"]);
    client.close();
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
  });

  it("refuses recipients beyond the project's maximum with 452 4.5.3", async () => {
    const { project: p, smtp: auth } = await project({ maxRecipients: 2 });
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    expect((await client.command("RCPT TO:<a@example.org>")).code).toBe(250);
    expect((await client.command("RCPT TO:<b@example.org>")).code).toBe(250);
    // The same recipient again is not another recipient.
    expect((await client.command("RCPT TO:<A@example.org>")).code).toBe(250);
    const third = await client.command("RCPT TO:<c@example.org>");
    expect([third.code, third.enhanced]).toEqual([452, "4.5.3"]);
    client.close();
    expect((await auditEvents(p.id, "message.rejected"))[0]?.details).toMatchObject({
      reason: "too_many_recipients",
    });
  });

  it("checks address syntax", async () => {
    const { smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    // What cannot be parsed is refused by the protocol layer (501), what cannot be relayed by policy (553).
    const unparsable = await client.command("MAIL FROM:<no-domain>");
    expect([unparsable.code, unparsable.enhanced]).toEqual([501, "5.1.7"]);
    const badSender = await client.command("MAIL FROM:<app@localhost>");
    expect([badSender.code, badSender.enhanced]).toEqual([553, "5.1.7"]);
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    const badRcpt = await client.command("RCPT TO:<someone@localhost>");
    expect([badRcpt.code, badRcpt.enhanced]).toEqual([553, "5.1.3"]);
    const garbage = await client.command("RCPT TO:<<>>");
    expect(garbage.code).toBeGreaterThanOrEqual(500);
    client.close();
  });
});

describe("quota", () => {
  it("refuses recipients over the per-minute quota with 451 4.7.1 and the wait, and audits it", async () => {
    const { project: p, smtp: auth } = await project({ quotaPerMinute: 2 });
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    await client.command("MAIL FROM:<app@example.com>");
    expect((await client.command("RCPT TO:<a@example.org>")).code).toBe(250);
    expect((await client.command("RCPT TO:<b@example.org>")).code).toBe(250);
    const over = await client.command("RCPT TO:<c@example.org>");
    expect([over.code, over.enhanced]).toEqual([451, "4.7.1"]);
    expect(over.text).toMatch(/retry in \d+ s/);
    client.close();
    expect((await auditEvents(p.id, "quota.exceeded"))[0]?.details).toMatchObject({
      window: "perMinute",
      limit: 2,
    });
    expect((await auditEvents(p.id, "message.rejected"))[0]?.details).toMatchObject({ reason: "quota" });
  });

  it("refunds the reserved recipients when the transaction does not end in 250", async () => {
    const { smtp: auth } = await project({ quotaPerMinute: 2 });
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    await client.command("MAIL FROM:<app@example.com>");
    expect((await client.command("RCPT TO:<a@example.org>")).code).toBe(250);
    expect((await client.command("RCPT TO:<b@example.org>")).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    // A bare CR fails the DATA: nothing was sent, so nothing may stay counted.
    client.write("Subject: x\r\rbody\r\n.\r\n");
    expect((await client.read()).code).toBe(521);
    client.close();
    await new Promise((r) => setTimeout(r, 100));
    const again = await RawSmtp.session(smtp.ports.smtp, auth);
    await again.client.command("MAIL FROM:<app@example.com>");
    expect((await again.client.command("RCPT TO:<a@example.org>")).code).toBe(250);
    expect((await again.client.command("RCPT TO:<b@example.org>")).code).toBe(250);
    // RSET gives them back too.
    await again.client.command("RSET");
    await again.client.command("MAIL FROM:<app@example.com>");
    expect((await again.client.command("RCPT TO:<c@example.org>")).code).toBe(250);
    again.client.close();
  });
});

describe("DATA", () => {
  it("refuses a declared SIZE over the limit at MAIL with 552 5.3.4", async () => {
    const { smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    const reply = await client.command("MAIL FROM:<app@example.com> SIZE=20001");
    expect([reply.code, reply.enhanced]).toEqual([552, "5.3.4"]);
    client.close();
  });

  it("refuses a message whose real size is over the limit with 552 5.3.4 and stores nothing", async () => {
    const { project: p, smtp: auth } = await project();
    const sent = mailer(auth).sendMail(message({ text: "x".repeat(30_000) }));
    expect(await refusal(sent)).toBe("552 5.3.4");
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
    expect((await auditEvents(p.id, "message.rejected"))[0]?.details).toMatchObject({ reason: "size" });
  });

  it("refuses bare LF smuggling: no second message is stored and the session ends", async () => {
    const { project: p, smtp: auth } = await project();
    for (const ending of ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r"]) {
      const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
      client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
      expect((await client.read()).code).toBe(250);
      expect((await client.read()).code).toBe(250);
      expect((await client.read()).code).toBe(354);
      client.write(
        `From: app@example.com\r\nSubject: first\r\n\r\nfirst${ending}` +
          "MAIL FROM:<app@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" +
          "From: ceo@example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n",
      );
      const reply = await client.read();
      expect([reply.code, reply.enhanced]).toEqual([521, "5.5.2"]);
      expect(await client.waitClosed()).toBe(true);
    }
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
    expect((await auditEvents(p.id, "message.rejected"))[0]?.details).toMatchObject({ reason: "bare_lf" });
  });

  it("keeps dot-stuffed lines and CRLF messages intact", async () => {
    const { project: p, smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    await client.read();
    await client.read();
    await client.read();
    client.write("From: app@example.com\r\nSubject: dots\r\n\r\n..leading dot\r\n.\r\n");
    const reply = await client.read();
    expect(reply.code).toBe(250);
    client.close();
    const stored = await ctx.db.message.findFirstOrThrow({
      where: { projectId: p.id },
      include: { body: true },
    });
    expect(Buffer.from(stored.body?.data ?? []).toString()).toMatch(/\r\n\r\n\.leading dot\r\n$/);
  });
});

describe("accept", () => {
  it("stores message, body, recipients and audit event, answers 250 2.0.0 queued as <id>, and enqueues it", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["example.com"] });
    const info = await mailer(auth).sendMail(
      message({
        to: ["one@example.org", "two@example.org"],
        messageId: "<abc@example.com>",
        subject: "Invoice",
      }),
    );
    const id = /queued as ([0-9a-f-]{36})$/.exec(info.response)?.[1];
    expect(info.response).toMatch(/^250 2\.0\.0 /);
    const stored = await ctx.db.message.findUniqueOrThrow({
      where: { id },
      include: { body: true, recipients: true },
    });
    expect(stored).toMatchObject({
      projectId: p.id,
      credentialId: auth.credentialId,
      mailFrom: "app@example.com",
      headerMessageId: "<abc@example.com>",
      subject: "Invoice",
      status: "queued",
    });
    expect(stored.recipients.map((r) => [r.address, r.status]).sort()).toEqual([
      ["one@example.org", "pending"],
      ["two@example.org", "pending"],
    ]);
    const body = Buffer.from(stored.body?.data ?? []);
    expect(stored.size).toBe(body.length);
    expect(stored.sha256).toBe((await import("node:crypto")).createHash("sha256").update(body).digest("hex"));
    const text = body.toString();
    expect(text.startsWith("Received: from client.test ([127.0.0.1])\r\n")).toBe(true);
    expect(text).toContain(`by postern.test (Postern) with ESMTPSA id ${id}`);
    expect(text).toContain(`(authenticated project ${p.id})`);
    expect(text).not.toContain(auth.username);
    expect(text).not.toContain(auth.password);

    const accepted = await ctx.db.auditEvent.findMany({
      where: { projectId: p.id, action: "message.accepted" },
    });
    expect(accepted).toHaveLength(1);
    expect(accepted[0]?.details).toMatchObject({
      messageId: id,
      recipients: ["one@example.org", "two@example.org"],
    });

    // The job is added right after the commit that the 250 waited for, not before the 250.
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.redisKeyPrefix });
    await expect
      .poll(async () => (await queue.getJob(id as string))?.data)
      .toEqual({ messageId: id, projectId: p.id });
    await queue.close();
  });

  it("exposes sessions, auth outcomes, acceptances, rejections and accept latency as metrics", async () => {
    const text = await metrics.metrics();
    expect(text).toMatch(/postern_smtp_auth_total\{outcome="success_bcrypt"\} \d+/);
    expect(text).toMatch(/postern_smtp_auth_total\{outcome="bad_secret"\} \d+/);
    expect(text).toMatch(/postern_smtp_messages_accepted_total \d+/);
    expect(text).toMatch(/postern_smtp_messages_rejected_total\{reason="sender_domain"\} \d+/);
    expect(text).toMatch(/postern_smtp_accept_duration_seconds_count \d+/);
    expect(text).toMatch(/postern_smtp_sessions_total\{listener="\d+",outcome="opened"\} \d+/);
  });

  it("never logs a secret (captured debug output)", async () => {
    const extra = await createCredentialFixture(ctx.db, (await project()).project.id);
    secretsSeen.push(extra.password);
    await mailer(extra).sendMail(message());
    await RawSmtp.session(smtp.ports.smtp, { username: extra.password, password: "x" }).then((s) =>
      s.client.close(),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(captured.text()).toContain("authenticated");
    expect(secretsSeen.length).toBeGreaterThan(5);
    for (const secret of secretsSeen) expect(captured.text()).not.toContain(secret);
    expect(captured.text()).not.toContain(
      Buffer.from(`\0${extra.username}\0${extra.password}`).toString("base64"),
    );
  });
});
