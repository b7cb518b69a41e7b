import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, SmtpSink, type TestContext } from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp, type Reply } from "./smtp-client";

/**
 * What a message's content and addresses get at the front door and on the way to the upstream:
 * the From header as mail readers find it, SMTPUTF8 (RFC 6531) end to end, content PostgreSQL
 * cannot hold, and bare line endings (SMTP_BARE_NEWLINE) next to SMTP smuggling.
 */

let ctx: TestContext;
/** SMTP_BARE_NEWLINE=normalize, the default. */
let smtp: RunningSmtp;
/** The same front door with SMTP_BARE_NEWLINE=reject. */
let strict: RunningSmtp;
let worker: RunningWorker;
let upstream: SmtpSink;
/** An upstream that does not advertise SMTPUTF8. */
let asciiUpstream: SmtpSink;

beforeAll(async () => {
  ctx = await createTestContext();
  const deps = { ...ctx, log: createLogger({ level: "silent" }) };
  smtp = await startSmtp({ ...deps, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  strict = await startSmtp(
    {
      ...deps,
      config: { ...ctx.config, smtp: { ...ctx.config.smtp, bareNewline: "reject" } },
      metrics: createMetricsRegistry(),
    },
    { smtpPort: 0, smtpsPort: 0 },
  );
  worker = await startWorker({ ...deps, metrics: createMetricsRegistry() });
  upstream = await SmtpSink.start();
  asciiUpstream = await SmtpSink.start({ smtputf8: false });
});

afterAll(async () => {
  await smtp?.stop();
  await strict?.stop();
  await worker?.stop();
  await upstream?.stop();
  await asciiUpstream?.stop();
  await ctx?.close();
});

function project(input: Parameters<typeof createProjectFixture>[2] = {}) {
  return createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url, ...input });
}

/**
 * One transaction over a fresh authenticated session: MAIL (with `parameters`), RCPT, DATA and
 * `content` as given, then the terminating `.`. Returns the first reply that is not a success
 * (or the reply to the end of DATA).
 */
async function send(
  port: number,
  auth: { username: string; password: string },
  envelope: { from: string; to: string[]; parameters?: string },
  content: string | Buffer,
): Promise<Reply & { closed: boolean }> {
  const { client } = await RawSmtp.session(port, auth);
  try {
    const mail = await client.command(`MAIL FROM:<${envelope.from}>${envelope.parameters ?? ""}`);
    if (mail.code !== 250) return { ...mail, closed: client.closed };
    for (const to of envelope.to) {
      const rcpt = await client.command(`RCPT TO:<${to}>`);
      if (rcpt.code !== 250) return { ...rcpt, closed: client.closed };
    }
    expect((await client.command("DATA")).code).toBe(354);
    client.write(content);
    client.write("\r\n.\r\n");
    const reply = await client.read();
    return { ...reply, closed: await client.waitClosed(reply.code === 521 ? 5_000 : 0) };
  } finally {
    client.close();
  }
}

const queuedId = (reply: Reply) => /queued as ([0-9a-f-]{36})$/.exec(reply.text)?.[1] as string;

async function stored(messageId: string) {
  return ctx.db.message.findUniqueOrThrow({
    where: { id: messageId },
    include: { body: true, recipients: true, deliveryAttempts: true },
  });
}

async function rejection(projectId: string) {
  // Refusal audits are written off the reply path, a few milliseconds later.
  await expect
    .poll(() => ctx.db.auditEvent.count({ where: { projectId, action: "message.rejected" } }), {
      timeout: 10_000,
    })
    .toBeGreaterThan(0);
  const [event] = await ctx.db.auditEvent.findMany({ where: { projectId, action: "message.rejected" } });
  return event?.details as Record<string, unknown>;
}

async function delivered(messageId: string) {
  await expect.poll(async () => (await stored(messageId)).status, { timeout: 15_000 }).toBe("delivered");
  return stored(messageId);
}

describe("the From header, as mail readers find it", () => {
  it("reads `From :` (obsolete syntax, any case) as From: a foreign domain there is refused with 550 5.7.1", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["example.com"] });
    for (const field of ["From : Boss <boss@evil.test>", "FROM\t: boss@evil.test"]) {
      const reply = await send(
        smtp.ports.smtp,
        auth,
        { from: "app@example.com", to: ["a@example.org"] },
        `${field}\r\nSubject: wire the money\r\n\r\nnow`,
      );
      expect([reply.code, reply.enhanced]).toEqual([550, "5.7.1"]);
    }
    expect(await rejection(p.id)).toMatchObject({ reason: "header_from", headerFrom: "boss@evil.test" });
    // The same header with an allowed domain is a From like any other.
    const allowed = await send(
      smtp.ports.smtp,
      auth,
      { from: "app@example.com", to: ["a@example.org"] },
      "From : App <app@example.com>\r\nSubject: fine\r\n\r\nbody",
    );
    expect(allowed.code).toBe(250);
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(1);
  });

  it("refuses a message with more than one From header with 550 5.6.0, with or without sender domains", async () => {
    const restricted = await project({ senderDomains: ["example.com"] });
    const open = await project();
    for (const { project: p, smtp: auth } of [restricted, open]) {
      // The second From, written the obsolete way, is the one some mail readers show.
      const reply = await send(
        smtp.ports.smtp,
        auth,
        { from: "app@example.com", to: ["a@example.org"] },
        "From: app@example.com\r\nFrom : ceo@evil.test\r\nSubject: two senders\r\n\r\nbody",
      );
      expect([reply.code, reply.enhanced]).toEqual([550, "5.6.0"]);
      expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
      expect(await rejection(p.id)).toMatchObject({ reason: "header_from_multiple", fromFields: 2 });
    }
  });
});

describe("SMTPUTF8 (RFC 6531)", () => {
  const sender = "jörg@bücher.example";
  const recipient = "δοκιμή@παράδειγμα.δοκιμή";
  const content =
    `From: Jörg <${sender}>\r\nTo: <${recipient}>\r\nSubject: Grüße aus Köln\r\n` +
    "Message-ID: <grüße@bücher.example>\r\n\r\nHallo, schöne Grüße.\r\n";

  it("is advertised in EHLO", async () => {
    const { client } = await RawSmtp.connect(smtp.ports.smtp);
    expect((await client.command("EHLO client.test")).lines).toContain("SMTPUTF8");
    await client.starttls();
    expect((await client.command("EHLO client.test")).lines).toContain("SMTPUTF8");
    client.close();
  });

  it("refuses a non-ASCII address without the SMTPUTF8 parameter with 553 5.6.7, at MAIL and at RCPT", async () => {
    const { project: p, smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    for (const address of [sender, "jörg@example.com"]) {
      const mail = await client.command(`MAIL FROM:<${address}>`);
      expect([mail.code, mail.enhanced]).toEqual([553, "5.6.7"]);
    }
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    const rcpt = await client.command(`RCPT TO:<${recipient}>`);
    expect([rcpt.code, rcpt.enhanced]).toEqual([553, "5.6.7"]);
    client.close();
    expect(await rejection(p.id)).toMatchObject({ reason: "smtputf8_required" });
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
  });

  it("refuses an address that is not UTF-8 (Latin-1 bytes): 553 5.6.7 without SMTPUTF8, 553 5.1.7 with it", async () => {
    const { smtp: auth } = await project();
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    const latin1 = (line: string) => {
      client.write(Buffer.from(`${line}\r\n`, "latin1"));
      return client.read();
    };
    const without = await latin1("MAIL FROM:<j\u00f6rg@example.com>");
    expect([without.code, without.enhanced]).toEqual([553, "5.6.7"]);
    const withParameter = await latin1("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8");
    expect([withParameter.code, withParameter.enhanced]).toEqual([553, "5.1.7"]);
    client.close();
  });

  it("keeps an ASCII (A-label) domain as the client wrote it, without SMTPUTF8", async () => {
    const { smtp: auth } = await project();
    const reply = await send(
      smtp.ports.smtp,
      auth,
      { from: "app@xn--bcher-kva.example", to: ["a@xn--bcher-kva.example"] },
      "From: app@xn--bcher-kva.example\r\nSubject: punycode\r\n\r\nbody",
    );
    expect(reply.code).toBe(250);
    const message = await stored(queuedId(reply));
    expect(message.mailFrom).toBe("app@xn--bcher-kva.example");
    expect(message.recipients.map((r) => r.address)).toEqual(["a@xn--bcher-kva.example"]);
  });

  it("accepts non-ASCII addresses with the parameter, stores them unchanged and forwards them to an upstream that offers SMTPUTF8", async () => {
    const { smtp: auth } = await project();
    const reply = await send(
      smtp.ports.smtp,
      auth,
      { from: sender, to: [recipient], parameters: " SMTPUTF8 BODY=8BITMIME" },
      content,
    );
    expect([reply.code, reply.enhanced]).toEqual([250, "2.0.0"]);
    const id = queuedId(reply);
    const message = await delivered(id);
    expect(message.mailFrom).toBe(sender);
    expect(message.recipients.map((r) => [r.address, r.status])).toEqual([[recipient, "delivered"]]);
    expect(message.subject).toBe("Grüße aus Köln");
    expect(message.headerMessageId).toBe("<grüße@bücher.example>");
    const body = Buffer.from(message.body?.data ?? []);
    // The trace header says UTF8SMTPSA (RFC 6531 4.3) and names the recipient as written.
    expect(body.toString("utf8")).toContain(`with UTF8SMTPSA id ${id}`);
    expect(body.toString("utf8")).toContain(`for <${recipient}>`);
    expect(body.subarray(body.indexOf("From: ")).equals(Buffer.from(`${content}\r\n`, "utf8"))).toBe(true);

    const arrived = upstream.messages.find((m) => m.raw.equals(body));
    expect(arrived).toBeDefined();
    expect(arrived).toMatchObject({ mailFrom: sender, rcptTo: [recipient], smtpUtf8: true });
  });

  it("compares internationalized sender domains in their ASCII form, in MAIL FROM and in the From header", async () => {
    const { project: p, smtp: auth } = await project({ senderDomains: ["xn--bcher-kva.example"] });
    const reply = await send(
      smtp.ports.smtp,
      auth,
      { from: sender, to: [recipient], parameters: " SMTPUTF8" },
      content,
    );
    expect(reply.code).toBe(250);
    const foreign = await send(
      smtp.ports.smtp,
      auth,
      { from: "jörg@bücher.test", to: [recipient], parameters: " SMTPUTF8" },
      content,
    );
    expect([foreign.code, foreign.enhanced]).toEqual([553, "5.7.1"]);
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(1);
  });

  it("fails the delivery with 553 5.6.7 when the upstream does not offer SMTPUTF8 (RFC 6531 3.2), sending nothing", async () => {
    const { smtp: auth } = await project({ upstream: asciiUpstream.url });
    const reply = await send(
      smtp.ports.smtp,
      auth,
      { from: sender, to: [recipient], parameters: " SMTPUTF8" },
      content,
    );
    expect(reply.code).toBe(250);
    const id = queuedId(reply);
    await expect.poll(async () => (await stored(id)).status, { timeout: 15_000 }).toBe("failed");
    const message = await stored(id);
    expect(message.deliveryAttempts).toHaveLength(1);
    expect(message.deliveryAttempts[0]).toMatchObject({
      outcome: "failed",
      code: 553,
      enhancedCode: "5.6.7",
    });
    expect(message.deliveryAttempts[0]?.response).toMatch(/SMTPUTF8/);
    expect(message.recipients.map((r) => [r.status, r.code, r.enhancedCode])).toEqual([
      ["failed", 553, "5.6.7"],
    ]);
    // The same upstream still takes ASCII mail, over the connection that was not used.
    const ascii = await send(
      smtp.ports.smtp,
      auth,
      { from: "app@example.com", to: ["a@example.org"] },
      "From: app@example.com\r\nSubject: ascii\r\n\r\nbody",
    );
    await delivered(queuedId(ascii));
    expect(asciiUpstream.messages.map((m) => m.mailFrom)).toEqual(["app@example.com"]);
  });
});

describe("content PostgreSQL cannot hold", () => {
  it("stores a message with NUL in its Subject and Message-ID: the body unchanged, the columns without the NUL", async () => {
    const { project: p, smtp: auth } = await project();
    const content =
      "From: app@example.com\r\nSubject: nul \u0000 here\r\nMessage-ID: <a\u0000b@example.com>\r\n\r\nbody \u0000";
    const reply = await send(
      smtp.ports.smtp,
      auth,
      { from: "app@example.com", to: ["a@example.org"] },
      content,
    );
    expect([reply.code, reply.enhanced]).toEqual([250, "2.0.0"]);
    const message = await delivered(queuedId(reply));
    expect(message).toMatchObject({ subject: "nul  here", headerMessageId: "<ab@example.com>" });
    const body = Buffer.from(message.body?.data ?? []);
    expect(body.subarray(body.indexOf("From: ")).toString("latin1")).toBe(`${content}\r\n`);
    const accepted = await ctx.db.auditEvent.findMany({
      where: { projectId: p.id, action: "message.accepted" },
    });
    expect(accepted[0]?.details).toMatchObject({ headerMessageId: "<ab@example.com>" });
    // The upstream gets the bytes as they came, NUL included.
    expect(upstream.messages.some((m) => m.raw.equals(body))).toBe(true);
  });
});

describe("bare line endings (SMTP_BARE_NEWLINE)", () => {
  /** Python's smtplib with bytes, as many applications send: lines end in a bare LF. */
  async function pythonSendmail(port: number, auth: { username: string; password: string }, message: Buffer) {
    const script = [
      "import smtplib, ssl, sys",
      "port, user, password, sender, recipient, message = sys.argv[1:]",
      "client = smtplib.SMTP('127.0.0.1', int(port), local_hostname='client.test', timeout=20)",
      "client.starttls(context=ssl._create_unverified_context())",
      "client.login(user, password)",
      "client.sendmail(sender, [recipient], bytes.fromhex(message))",
      "client.quit()",
    ].join("\n");
    return promisify(execFile)(
      "/usr/bin/python3",
      [
        "-c",
        script,
        String(port),
        auth.username,
        auth.password,
        "app@example.com",
        "a@example.org",
        message.toString("hex"),
      ],
      { timeout: 30_000 },
    );
  }

  it("normalize (the default): Python's smtplib.sendmail with bare LFs is stored and delivered with CRLF", async () => {
    const { project: p, smtp: auth } = await project();
    const sent = Buffer.from(
      "From: app@example.com\nTo: a@example.org\nSubject: bare newlines\n\nline one\n.leading dot\nline three\n",
    );
    await pythonSendmail(smtp.ports.smtp, auth, sent);
    const [row] = await ctx.db.message.findMany({ where: { projectId: p.id } });
    const message = await delivered(row?.id as string);
    // smtplib stuffed the dot and ended the data with CRLF . CRLF; each bare LF is now CRLF.
    const normalized = Buffer.from(
      "From: app@example.com\r\nTo: a@example.org\r\nSubject: bare newlines\r\n\r\nline one\r\n.leading dot\r\nline three\r\n\r\n",
    );
    const body = Buffer.from(message.body?.data ?? []);
    expect(body.subarray(body.indexOf("From: ")).equals(normalized)).toBe(true);
    expect(message.subject).toBe("bare newlines");
    expect(message.size).toBe(body.length);
    const arrived = upstream.messages.find((m) => m.raw.equals(body));
    expect(arrived?.raw.toString("latin1")).not.toMatch(/[^\r]\n|\r[^\n]/);
  });

  // Sequences another server could read as the end of DATA (SMTP smuggling), and bare CRs.
  const lookAlikes = ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\n", "\r.\r", "\n.\r", "\rx"];

  it("normalize: a bare CR and every end-of-DATA look-alike are still refused with 521 5.5.2, nothing stored", async () => {
    const { project: p, smtp: auth } = await project();
    for (const ending of lookAlikes) {
      const reply = await send(
        smtp.ports.smtp,
        auth,
        { from: "app@example.com", to: ["a@example.org"] },
        `From: app@example.com\r\nSubject: first\r\n\r\nfirst${ending}` +
          "MAIL FROM:<app@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" +
          "From: ceo@example.com\r\nSubject: smuggled\r\n\r\nsmuggled",
      );
      expect([reply.code, reply.enhanced, reply.closed], JSON.stringify(ending)).toEqual([
        521,
        "5.5.2",
        true,
      ]);
    }
    // A line of one dot right after the DATA command, ended by a bare LF.
    const first = await send(
      smtp.ports.smtp,
      auth,
      { from: "app@example.com", to: ["a@example.org"] },
      ".\nMAIL FROM:<app@example.com>\r\n",
    );
    expect([first.code, first.enhanced]).toEqual([521, "5.5.2"]);
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
    expect(await rejection(p.id)).toMatchObject({ reason: "bare_lf" });
  });

  it("reject: a bare LF is refused with 521 5.5.2 and the session ends, as is every look-alike", async () => {
    const { project: p, smtp: auth } = await project();
    for (const ending of ["\n", ...lookAlikes]) {
      const reply = await send(
        strict.ports.smtp,
        auth,
        { from: "app@example.com", to: ["a@example.org"] },
        `From: app@example.com\r\nSubject: first\r\n\r\nfirst${ending}second line`,
      );
      expect([reply.code, reply.enhanced, reply.closed], JSON.stringify(ending)).toEqual([
        521,
        "5.5.2",
        true,
      ]);
    }
    await expect(
      pythonSendmail(strict.ports.smtp, auth, Buffer.from("Subject: x\n\nbody\n")),
    ).rejects.toThrow(/521/);
    expect(await ctx.db.message.count({ where: { projectId: p.id } })).toBe(0);
    // CRLF messages go through as before.
    const crlf = await send(
      strict.ports.smtp,
      auth,
      { from: "app@example.com", to: ["a@example.org"] },
      "From: app@example.com\r\nSubject: fine\r\n\r\nbody",
    );
    expect(crlf.code).toBe(250);
  });
});
