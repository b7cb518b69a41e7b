import { pruneIdempotencyKeys } from "@postern/api";
import { sqlPoolOf } from "@postern/db";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { startWorker } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let sink: SmtpSink;
let worker: Awaited<ReturnType<typeof startWorker>>;
let sender: ProjectFixture;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  sink = await SmtpSink.start();
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  sender = await createProjectFixture(ctx.db, ctx.config, {
    upstream: sink.url,
    senderDomains: ["example.com"],
  });
}, 60_000);
afterAll(async () => {
  await app?.close();
  await worker?.stop();
  await sink?.stop();
  await ctx?.close();
});

const jsonMessage = {
  from: "App <app@example.com>",
  to: ["user@example.net"],
  cc: ["cc@example.net"],
  bcc: ["hidden@example.net"],
  subject: "Your receipt",
  text: "Thank you.",
  html: "<p>Thank you.</p>",
  headers: { "X-Order": "1234" },
  attachments: [
    {
      filename: "receipt.txt",
      contentType: "text/plain",
      content: Buffer.from("paid 10 EUR\n").toString("base64"),
    },
  ],
};

function postJson(body: unknown, options: { token?: string; key?: string; server?: FastifyInstance } = {}) {
  return (options.server ?? app).inject({
    method: "POST",
    url: "/v1/messages",
    headers: {
      ...bearer(options.token ?? sender.apiToken.token),
      "content-type": "application/json",
      ...(options.key ? { "idempotency-key": options.key } : {}),
    },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}

function postRaw(
  query: string,
  raw: Buffer | string,
  options: { token?: string; key?: string; server?: FastifyInstance } = {},
) {
  return (options.server ?? app).inject({
    method: "POST",
    url: `/v1/messages?${query}`,
    headers: {
      ...bearer(options.token ?? sender.apiToken.token),
      "content-type": "message/rfc822",
      ...(options.key ? { "idempotency-key": options.key } : {}),
    },
    payload: typeof raw === "string" ? Buffer.from(raw) : raw,
  });
}

const rawMessage = (subject: string) =>
  `From: App <app@example.com>\r\nTo: <user@example.net>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, "")}@example.com>\r\n\r\nHello.\r\n`;

async function messageCount(projectId: string) {
  return ctx.db.message.count({ where: { projectId } });
}

async function delivered(id: string) {
  await expect
    .poll(async () => (await ctx.db.message.findUnique({ where: { id } }))?.status, { timeout: 20_000 })
    .toBe("delivered");
}

const receivedFor = (id: string) => sink.messages.find((m) => m.raw.includes(`id ${id}`));

describe("POST /v1/messages with JSON", () => {
  it("composes the message, answers 202 after the commit, and the worker delivers it", async () => {
    const response = await postJson(jsonMessage);
    expect(response.statusCode).toBe(202);
    const { id } = response.json();
    const row = await ctx.db.message.findUniqueOrThrow({ where: { id }, include: { recipients: true } });
    expect(row).toMatchObject({
      projectId: sender.project.id,
      mailFrom: "app@example.com",
      subject: "Your receipt",
    });
    expect(row.credentialId).toBeNull();
    expect(row.recipients.map((r) => r.address).sort()).toEqual([
      "cc@example.net",
      "hidden@example.net",
      "user@example.net",
    ]);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: sender.project.id, action: "message.accepted" },
      orderBy: { id: "desc" },
    });
    expect(audit.actor).toBe(`token:${sender.apiToken.id}`);

    await delivered(id);
    const received = receivedFor(id);
    expect(received?.rcptTo.sort()).toEqual(["cc@example.net", "hidden@example.net", "user@example.net"]);
    const mime = received?.raw.toString("utf8") ?? "";
    expect(mime).toMatch(/^Received: from \[127\.0\.0\.1\]\r\n\tby postern\.test \(Postern\) with HTTP id /);
    expect(mime).toContain(`(authenticated project ${sender.project.id})`);
    expect(mime).toMatch(/\r\nFrom: App <app@example\.com>\r\n/);
    expect(mime).toContain("Cc: cc@example.net");
    expect(mime).not.toMatch(/^Bcc:/im);
    expect(mime).not.toContain("hidden@example.net");
    expect(mime).toContain("X-Order: 1234");
    expect(mime).toMatch(/Content-Type: multipart\/mixed; boundary=/);
    expect(mime).toMatch(/Content-Type: multipart\/alternative;\s+boundary=/);
    expect(mime).toContain("filename=receipt.txt");
    expect(mime).toContain(Buffer.from("paid 10 EUR\n").toString("base64"));
    expect(mime).toMatch(/\r\nMIME-Version: 1\.0\r\n/);
    // Delivered as stored: the raw download is the upstream's bytes.
    const raw = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}/raw`,
      headers: bearer(sender.apiToken.token),
    });
    expect(raw.statusCode).toBe(200);
    expect(raw.headers["content-type"]).toBe("message/rfc822");
    expect(raw.rawPayload.equals(received?.raw ?? Buffer.alloc(0))).toBe(true);
  });

  it.each([
    ["a body that is not JSON", "{not json", "invalid_message"],
    ["a missing subject", { ...jsonMessage, subject: undefined }, "invalid_message"],
    ["an unknown field", { ...jsonMessage, priority: "high" }, "invalid_message"],
    [
      "an attachment that is not base64",
      { ...jsonMessage, attachments: [{ filename: "a", contentType: "text/plain", content: "@@@" }] },
      "invalid_message",
    ],
    ["a header the composer sets", { ...jsonMessage, headers: { Subject: "other" } }, "invalid_message"],
    ["a recipient that is not a mailbox", { ...jsonMessage, to: ["not an address"] }, "invalid_recipient"],
    ["a sender that is not a mailbox", { ...jsonMessage, from: "nobody" }, "invalid_sender"],
  ])("refuses %s with 422 naming the problem, storing nothing", async (_name, body, code) => {
    const before = await messageCount(sender.project.id);
    const response = await postJson(body);
    expect(response.statusCode).toBe(422);
    expect(response.json().error.code).toBe(code);
    expect(response.json().error.message.length).toBeGreaterThan(10);
    expect(await messageCount(sender.project.id)).toBe(before);
  });

  it("cannot inject a header through the subject or a header value", async () => {
    const injected = await postJson({ ...jsonMessage, subject: "Hi\r\nBcc: evil@elsewhere.org", bcc: [] });
    expect(injected.statusCode).toBe(202);
    const body = await ctx.db.messageBody.findUniqueOrThrow({ where: { messageId: injected.json().id } });
    expect(Buffer.from(body.data).toString("utf8")).not.toMatch(/^Bcc:/im);
    const header = await postJson({ ...jsonMessage, headers: { "X-Note": "a\r\nBcc: evil@elsewhere.org" } });
    expect(header.statusCode).toBe(422);
    expect(header.json().error.message).toContain("headers.X-Note");
  });

  it("names the field that is wrong", async () => {
    const response = await postJson({ ...jsonMessage, subject: 42 });
    expect(response.json().error.message).toMatch(/^the message is invalid: subject: /);
  });
});

describe("POST /v1/messages with message/rfc822", () => {
  it("stores the bytes behind the trace header, delivers them to the envelope of the query, and serves them raw", async () => {
    const raw = rawMessage("Raw one");
    const response = await postRaw("from=app@example.com&to=user@example.net&to=other@example.net", raw);
    expect(response.statusCode).toBe(202);
    const { id } = response.json();
    await delivered(id);
    const received = receivedFor(id);
    expect(received?.mailFrom).toBe("app@example.com");
    expect(received?.rcptTo.sort()).toEqual(["other@example.net", "user@example.net"]);
    const bytes = received?.raw ?? Buffer.alloc(0);
    expect(bytes.toString("utf8")).toMatch(
      /^Received: from \[127\.0\.0\.1\]\r\n\tby postern\.test \(Postern\) with HTTP id /,
    );
    expect(bytes.subarray(bytes.length - raw.length).toString("utf8")).toBe(raw);
    const download = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}/raw`,
      headers: bearer(sender.apiToken.token),
    });
    expect(download.statusCode).toBe(200);
    expect(download.rawPayload.equals(bytes)).toBe(true);
  });

  it("normalises bare LF line ends to CRLF, as SMTP does by default", async () => {
    const response = await postRaw(
      "from=app@example.com&to=user@example.net",
      rawMessage("Bare LF").replaceAll("\r\n", "\n"),
    );
    expect(response.statusCode).toBe(202);
    const body = await ctx.db.messageBody.findUniqueOrThrow({ where: { messageId: response.json().id } });
    expect(Buffer.from(body.data).toString("utf8")).toContain(rawMessage("Bare LF"));
  });

  it("refuses a missing envelope and an SMTP smuggling line with 422", async () => {
    const noRecipient = await postRaw("from=app@example.com", rawMessage("No rcpt"));
    expect(noRecipient.statusCode).toBe(422);
    expect(noRecipient.json().error.message).toContain("to");
    const smuggled = await postRaw(
      "from=app@example.com&to=user@example.net",
      `${rawMessage("Smuggle")}\n.\nMAIL FROM:<x@y.z>\r\n`,
    );
    expect(smuggled.statusCode).toBe(422);
    expect(smuggled.json().error.code).toBe("invalid_line_endings");
  });
});

describe("submission refusals, with SMTP's reasons", () => {
  it("403 project_suspended for a suspended project", async () => {
    const suspended = await createProjectFixture(ctx.db, ctx.config, { status: "suspended" });
    const response = await postJson(jsonMessage, { token: suspended.apiToken.token });
    expect(response.statusCode).toBe(403);
    expect(response.json().error.code).toBe("project_suspended");
    expect(await messageCount(suspended.project.id)).toBe(0);
  });

  it("403 sender_not_allowed for an envelope sender outside the sender domains", async () => {
    const response = await postRaw(
      "from=app@elsewhere.org&to=user@example.net",
      rawMessage("Foreign envelope"),
    );
    expect(response.statusCode).toBe(403);
    expect(response.json().error.code).toBe("sender_not_allowed");
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: sender.project.id, action: "message.rejected" },
      orderBy: { id: "desc" },
    });
    expect(audit.details).toMatchObject({
      reason: "sender_domain",
      via: "http",
      mailFrom: "app@elsewhere.org",
    });
  });

  it("403 sender_not_allowed for a From header outside the sender domains (subdomains allowed)", async () => {
    const foreign = await postRaw(
      "from=app@example.com&to=user@example.net",
      rawMessage("Foreign header").replace("app@example.com", "ceo@elsewhere.org"),
    );
    expect(foreign.statusCode).toBe(403);
    expect(foreign.json().error.code).toBe("sender_not_allowed");
    expect(foreign.json().error.message).toContain("ceo@elsewhere.org");
    const subdomain = await postJson({ ...jsonMessage, from: "app@mail.example.com" });
    expect(subdomain.statusCode).toBe(202);
    const twoFroms = await postRaw(
      "from=app@example.com&to=user@example.net",
      `From: a@example.com\r\n${rawMessage("Two")}`,
    );
    expect(twoFroms.statusCode).toBe(422);
  });

  it("422 too_many_recipients above the project's maxRecipients (repeats count once)", async () => {
    const small = await createProjectFixture(ctx.db, ctx.config, { maxRecipients: 2 });
    const over = await postJson(
      { ...jsonMessage, to: ["a@example.net", "b@example.net"], cc: ["c@example.net"], bcc: [] },
      { token: small.apiToken.token },
    );
    expect(over.statusCode).toBe(422);
    expect(over.json().error.code).toBe("too_many_recipients");
    const repeated = await postJson(
      { ...jsonMessage, to: ["a@example.net", "A@example.net"], cc: ["b@example.net"], bcc: [] },
      { token: small.apiToken.token },
    );
    expect(repeated.statusCode).toBe(202);
  });

  it("429 quota_exceeded with Retry-After when the recipients exceed the quota, nothing stored", async () => {
    const limited = await createProjectFixture(ctx.db, ctx.config, { quotaPerMinute: 3, quotaDaily: 100 });
    const first = await postJson({ ...jsonMessage, bcc: [] }, { token: limited.apiToken.token });
    expect(first.statusCode).toBe(202);
    const second = await postJson({ ...jsonMessage, bcc: [] }, { token: limited.apiToken.token });
    expect(second.statusCode).toBe(429);
    expect(second.json().error.code).toBe("quota_exceeded");
    expect(Number(second.headers["retry-after"])).toBeGreaterThan(0);
    expect(await messageCount(limited.project.id)).toBe(1);
    // Audited as SMTP audits it.
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: limited.project.id, action: { in: ["quota.exceeded", "message.rejected"] } },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => [a.action, a.actor])).toEqual([
      ["quota.exceeded", `token:${limited.apiToken.id}`],
      ["message.rejected", `token:${limited.apiToken.id}`],
    ]);
    expect(audit[0]?.details).toMatchObject({ window: "perMinute", limit: 3 });
    expect(audit[1]?.details).toMatchObject({ reason: "quota", via: "http" });
  });

  it("415 unsupported_media_type for another content type", async () => {
    const response = await app.inject({
      method: "POST",
      url: "/v1/messages",
      headers: { ...bearer(sender.apiToken.token), "content-type": "text/plain" },
      payload: "hello",
    });
    expect(response.statusCode).toBe(415);
    expect(response.json().error.code).toBe("unsupported_media_type");
  });

  it("413 message_too_large for JSON whose decoded content is over MAX_MESSAGE_SIZE, nothing stored", async () => {
    const small = await apiFor(ctx, {
      config: { ...ctx.config, smtp: { ...ctx.config.smtp, maxMessageSize: 4096 } },
    });
    try {
      const before = await messageCount(sender.project.id);
      const attachment = Buffer.alloc(5000, 1).toString("base64");
      const response = await postJson(
        {
          ...jsonMessage,
          attachments: [
            { filename: "big.bin", contentType: "application/octet-stream", content: attachment },
          ],
        },
        { server: small },
      );
      expect(response.statusCode).toBe(413);
      expect(response.json().error.code).toBe("message_too_large");
      // Over the route's body limit too: Fastify stops reading, same answer.
      const huge = await postRaw("from=app@example.com&to=user@example.net", Buffer.alloc(20_000, 0x61), {
        server: small,
      });
      expect(huge.statusCode).toBe(413);
      expect(huge.json().error.code).toBe("message_too_large");
      expect(await messageCount(sender.project.id)).toBe(before);
    } finally {
      await small.close();
    }
  });

  it("503 store_unavailable when the store refuses the commit, the quota given back", async () => {
    // A database of its own whose Message inserts fail as a server going down would fail them.
    const failing = await createTestContext();
    const server = await apiFor(failing);
    try {
      const project = await createProjectFixture(failing.db, failing.config, {
        quotaPerMinute: 1,
        quotaDaily: 10,
      });
      await failing.db.$executeRawUnsafe(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'going down' USING ERRCODE = '57P01'; END $$`);
      await failing.db.$executeRawUnsafe(
        `CREATE TRIGGER refuse BEFORE INSERT ON "Message" FOR EACH ROW EXECUTE FUNCTION refuse()`,
      );
      const message = { ...jsonMessage, from: "app@example.com", cc: [], bcc: [] };
      const response = await postJson(message, { server, token: project.apiToken.token });
      expect(response.statusCode).toBe(503);
      expect(response.json().error.code).toBe("store_unavailable");
      await failing.db.$executeRawUnsafe(`DROP TRIGGER refuse ON "Message"`);
      // The recipient counted for the refused message was given back: the quota of 1 still allows one.
      await expect
        .poll(async () => (await postJson(message, { server, token: project.apiToken.token })).statusCode, {
          timeout: 10_000,
        })
        .toBe(202);
    } finally {
      await server.close();
      await failing.close();
    }
  });
});

describe("GET /v1/messages/:id/raw", () => {
  it("answers 404 for another project's message and 410 once retention dropped the body", async () => {
    const response = await postRaw("from=app@example.com&to=user@example.net", rawMessage("Retained"));
    const { id } = response.json();
    const other = await createProjectFixture(ctx.db, ctx.config);
    const theirs = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}/raw`,
      headers: bearer(other.apiToken.token),
    });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json().error.code).toBe("not_found");
    // As the sweeper's retention leaves a finished message: the row without its body.
    await delivered(id);
    await ctx.db.messageBody.delete({ where: { messageId: id } });
    const gone = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}/raw`,
      headers: bearer(sender.apiToken.token),
    });
    expect(gone.statusCode).toBe(410);
    expect(gone.json().error.code).toBe("gone");
  });
});

describe("Idempotency-Key", () => {
  it("answers the first id for the same request within 24 h and stores nothing new", async () => {
    const before = await messageCount(sender.project.id);
    const first = await postJson(jsonMessage, { key: "order-1234" });
    const again = await postJson(jsonMessage, { key: "order-1234" });
    expect(first.statusCode).toBe(202);
    expect(again.statusCode).toBe(202);
    expect(again.json().id).toBe(first.json().id);
    expect(await messageCount(sender.project.id)).toBe(before + 1);
    // Keys are per project: another project's same key is its own.
    const other = await createProjectFixture(ctx.db, ctx.config);
    const theirs = await postJson(
      { ...jsonMessage, from: "app@example.com" },
      { key: "order-1234", token: other.apiToken.token },
    );
    expect(theirs.statusCode).toBe(202);
    expect(theirs.json().id).not.toBe(first.json().id);
  });

  it("refuses the same key with another body with 422 idempotency_key_reused", async () => {
    const first = await postRaw("from=app@example.com&to=user@example.net", rawMessage("Keyed"), {
      key: "raw-1",
    });
    expect(first.statusCode).toBe(202);
    const before = await messageCount(sender.project.id);
    const other = await postRaw("from=app@example.com&to=user@example.net", rawMessage("Keyed, changed"), {
      key: "raw-1",
    });
    expect(other.statusCode).toBe(422);
    expect(other.json().error.code).toBe("idempotency_key_reused");
    const otherEnvelope = await postRaw("from=app@example.com&to=else@example.net", rawMessage("Keyed"), {
      key: "raw-1",
    });
    expect(otherEnvelope.statusCode).toBe(422);
    expect(await messageCount(sender.project.id)).toBe(before);
  });

  it("stores one message for concurrent requests with one key, all answered its id", async () => {
    const before = await messageCount(sender.project.id);
    const responses = await Promise.all(
      Array.from({ length: 8 }, () => postJson({ ...jsonMessage, subject: "Concurrent" }, { key: "burst" })),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(8).fill(202));
    const ids = new Set(responses.map((r) => r.json().id));
    expect(ids.size).toBe(1);
    expect(await messageCount(sender.project.id)).toBe(before + 1);
    const accepted = await ctx.db.auditEvent.count({
      where: { action: "message.accepted", details: { path: ["messageId"], equals: [...ids][0] } },
    });
    expect(accepted).toBe(1);
    // Delivered once: the duplicates refused by the primary key planned no delivery of their own.
    await delivered([...ids][0] as string);
    const sent = await app.inject({
      method: "GET",
      url: `/v1/messages/${[...ids][0]}`,
      headers: bearer(sender.apiToken.token),
    });
    expect(sent.json().attempts).toHaveLength(1);
    expect(sink.messages.filter((m) => m.raw.includes("Subject: Concurrent"))).toHaveLength(1);
  });

  it("a claim whose message was never stored (a crash between claim and commit) is completed by the retry", async () => {
    const request = { ...jsonMessage, subject: "After a crash" };
    const first = await postJson(request, { key: "crash-1" });
    const { id } = first.json();
    // As if the process had died after claiming the key and before its message committed.
    await ctx.db.message.delete({ where: { id } });
    const before = await messageCount(sender.project.id);
    const retry = await postJson(request, { key: "crash-1" });
    expect(retry.statusCode).toBe(202);
    expect(retry.json().id).toBe(id);
    expect(await messageCount(sender.project.id)).toBe(before + 1);
  });

  it("keys older than 24 h are pruned, newer ones kept", async () => {
    await postJson({ ...jsonMessage, subject: "Pruned" }, { key: "old" });
    await postJson({ ...jsonMessage, subject: "Kept" }, { key: "new" });
    await ctx.db.idempotencyKey.updateMany({
      where: { key: "old" },
      data: { createdAt: new Date(Date.now() - 25 * 3600_000) },
    });
    expect(await pruneIdempotencyKeys(sqlPoolOf(ctx.db), 1)).toBe(1);
    expect(
      (await ctx.db.idempotencyKey.findMany({ where: { key: { in: ["old", "new"] } } })).map((k) => k.key),
    ).toEqual(["new"]);
  });

  it("a key older than 24 h is new again", async () => {
    const first = await postJson(jsonMessage, { key: "yesterday" });
    await ctx.db.idempotencyKey.updateMany({
      where: { key: "yesterday" },
      data: { createdAt: new Date(Date.now() - 25 * 3600_000) },
    });
    const later = await postJson({ ...jsonMessage, subject: "Another day" }, { key: "yesterday" });
    expect(later.statusCode).toBe(202);
    expect(later.json().id).not.toBe(first.json().id);
  });
});

describe("25 MiB raw submissions (MAX_MESSAGE_SIZE 26214400)", () => {
  const envelope = "from=app@example.com&to=user@example.net";
  const ofSize = (size: number) => {
    const head = Buffer.from(rawMessage("Large").replace("Hello.\r\n", ""));
    const line = Buffer.from(`${"x".repeat(998)}\r\n`);
    const body = Buffer.alloc(size - head.length);
    for (let at = 0; at < body.length; at += line.length) line.copy(body, at);
    body.write("\r\n", body.length - 2);
    return Buffer.concat([head, body]);
  };

  it("accepts one within the limit, delivers it and serves the same bytes", async () => {
    const raw = ofSize(25 * 1024 * 1024 - 4096);
    const response = await postRaw(envelope, raw);
    expect(response.statusCode).toBe(202);
    const { id } = response.json();
    await delivered(id);
    const received = receivedFor(id);
    expect(received?.raw.subarray(received.raw.length - raw.length).equals(raw)).toBe(true);
    const download = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}/raw`,
      headers: bearer(sender.apiToken.token),
    });
    expect(download.statusCode).toBe(200);
    expect(download.rawPayload.equals(received?.raw ?? Buffer.alloc(0))).toBe(true);
  }, 60_000);

  it("refuses one over the limit with 413, nothing stored", async () => {
    const before = await messageCount(sender.project.id);
    const response = await postRaw(envelope, ofSize(ctx.config.smtp.maxMessageSize + 1));
    expect(response.statusCode).toBe(413);
    expect(response.json().error.code).toBe("message_too_large");
    expect(await messageCount(sender.project.id)).toBe(before);
  }, 60_000);
});

describe("POST /admin/projects/:id/messages", () => {
  it("submits for the project with the operator token, audited as admin, with the project's checks", async () => {
    const post = (projectId: string, body: unknown, token = ctx.config.adminToken) =>
      app.inject({
        method: "POST",
        url: `/admin/projects/${projectId}/messages`,
        headers: { ...bearer(token), "content-type": "application/json" },
        payload: JSON.stringify(body),
      });
    const response = await post(sender.project.id, jsonMessage);
    expect(response.statusCode).toBe(202);
    const { id } = response.json();
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { action: "message.accepted", details: { path: ["messageId"], equals: id } },
    });
    expect(audit.actor).toBe("admin");
    await delivered(id);
    expect((await post(sender.project.id, { ...jsonMessage, from: "x@elsewhere.org" })).statusCode).toBe(403);
    expect((await post(sender.project.id, jsonMessage, sender.apiToken.token)).statusCode).toBe(401);
    const missing = await post("01a25177-0000-7000-8000-000000000000", jsonMessage);
    expect(missing.statusCode).toBe(404);
  });
});
