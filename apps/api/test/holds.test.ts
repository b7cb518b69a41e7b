import { buildApi } from "@postern/api";
import { type MessageStatus, sqlPoolOf, uuidv7 } from "@postern/db";
import { createDeliveryProducer, createDeliveryQueue, type DeliveryProducer } from "@postern/queue";
import { createAcceptor, type RunningSmtp, startSmtp, summariseHeaders } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker, sweep } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer } from "./api-helpers";

/*
 * Holds and sandbox end to end: messages stored through the acceptor (the seam a rule's `hold`
 * sets `initialStatus` on) or a real SMTP session / HTTP submission, settled through the API or the
 * sweeper, delivered by the real worker to a real SMTP sink.
 */

let ctx: TestContext;
let api: FastifyInstance;
let smtp: RunningSmtp;
let worker: RunningWorker;
let producer: DeliveryProducer;
const sinks: SmtpSink[] = [];
const log = createLogger({ level: "silent" });

beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1" });
  api = await buildApi({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
  });
  smtp = await startSmtp({ ...ctx, log, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  await smtp?.stop();
  await producer?.close();
  for (const sink of sinks) await sink.stop();
  await ctx?.close();
});

async function projectWithSink(): Promise<{ sink: SmtpSink; fixture: ProjectFixture }> {
  const sink = await SmtpSink.start();
  sinks.push(sink);
  const fixture = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  return { sink, fixture };
}

/** Stores `count` messages as held through the acceptor, as a rule's hold does; returns their ids. */
async function holdMessages(fixture: ProjectFixture, count = 1): Promise<string[]> {
  const acceptor = createAcceptor({ sql: sqlPoolOf(ctx.db), producer, log });
  const ids = Array.from({ length: count }, () => uuidv7());
  const outcomes = await Promise.all(
    ids.map((id, i) => {
      const bytes = Buffer.from(
        `From: <app@example.com>\r\nTo: <user${i}@example.net>\r\nSubject: held ${i}\r\nMessage-ID: <${id}@example.com>\r\n\r\nhello ${id}\r\n`,
      );
      return acceptor.accept({
        id,
        client: { project: { id: fixture.project.id, mode: "live" }, actor: "test" },
        ip: "127.0.0.1",
        mailFrom: "app@example.com",
        recipients: [`user${i}@example.net`],
        bytes,
        headers: summariseHeaders(bytes),
        initialStatus: "held",
      });
    }),
  );
  expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
  await acceptor.settled();
  return ids;
}

async function statusOf(id: string): Promise<MessageStatus> {
  return (await ctx.db.message.findUniqueOrThrow({ where: { id } })).status;
}

async function eventsOf(id: string) {
  const events = await ctx.db.messageEvent.findMany({ where: { messageId: id }, orderBy: { id: "asc" } });
  return events.map((e) => ({ type: e.type, data: e.data }));
}

/** Polls until `condition` holds; fails naming `what` after `timeoutMs`. */
async function until(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Whether the message has a delivery job (a held or sandboxed message must have none). */
async function hasJob(id: string): Promise<boolean> {
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  try {
    return (await queue.getJobState(id)) !== "unknown";
  } finally {
    await queue.close();
  }
}

/**
 * A stale job naming the message: the worker runs it and must not send. Completed jobs are
 * removed, so the job is done once its state is unknown.
 */
async function runStaleJob(id: string, projectId: string): Promise<void> {
  await producer.enqueue({ id, projectId });
  await until(async () => !(await hasJob(id)), "the stale job to complete");
}

const post = (url: string, token: string, payload?: unknown) =>
  api.inject({ method: "POST", url, headers: bearer(token), payload: payload as object });

/** A sweep as the worker's sweeper runs it, at `now`. */
function sweepAt(now: Date) {
  return sweep(
    {
      config: ctx.config,
      sql: sqlPoolOf(ctx.db),
      redis: ctx.redis,
      queue: createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix),
      producer,
    },
    now,
  );
}

async function patchProject(id: string, body: object) {
  const response = await api.inject({
    method: "PATCH",
    url: `/admin/projects/${id}`,
    headers: bearer(ctx.config.adminToken),
    payload: body,
  });
  return response;
}

describe("a held message", () => {
  it("is stored held with its message.held event and no job; a stale job does not send it; approve delivers it now", async () => {
    const { sink, fixture } = await projectWithSink();
    const [id] = (await holdMessages(fixture)) as [string];
    expect(await statusOf(id)).toBe("held");
    const events = await eventsOf(id);
    expect(events.map((e) => e.type)).toEqual(["message.held"]);
    expect(events[0]?.data).toMatchObject({ status: "held", mailFrom: "app@example.com" });
    expect(await hasJob(id)).toBe(false);

    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);
    expect(await statusOf(id)).toBe("held");

    const approved = await post(`/v1/messages/${id}/approve`, fixture.apiToken.token);
    expect(approved.statusCode).toBe(202);
    expect(approved.json()).toEqual({ id, status: "queued" });
    await until(() => sink.messages.length === 1, "the approved message at the sink");
    expect(sink.messages[0]?.raw.toString()).toContain(`hello ${id}`);
    await until(async () => (await statusOf(id)) === "delivered", "the message delivered");
    expect((await eventsOf(id)).map((e) => e.type)).toEqual([
      "message.held",
      "message.approved",
      "message.delivered",
    ]);
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: fixture.project.id, action: "message.approved" },
    });
    expect(audit.map((a) => a.details)).toEqual([{ messageId: id }]);

    // Approved once: a second approve, or a deny, is a 409 that changes nothing.
    for (const action of ["approve", "deny"]) {
      const again = await post(`/v1/messages/${id}/${action}`, fixture.apiToken.token);
      expect(again.statusCode).toBe(409);
      expect(again.json().error.code).toBe("invalid_transition");
    }
  });

  it("denied, is final and never sent, even by a stale job", async () => {
    const { sink, fixture } = await projectWithSink();
    const [id] = (await holdMessages(fixture)) as [string];
    const denied = await post(`/v1/messages/${id}/deny`, fixture.apiToken.token);
    expect(denied.statusCode).toBe(202);
    expect(denied.json()).toEqual({ id, status: "denied" });
    expect((await eventsOf(id)).map((e) => e.type)).toEqual(["message.held", "message.denied"]);
    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);
    expect(await statusOf(id)).toBe("denied");
    expect((await post(`/v1/messages/${id}/approve`, fixture.apiToken.token)).statusCode).toBe(409);
  });

  it("can be cancelled; approve and deny of a queued message are 409 invalid_transition", async () => {
    const { fixture } = await projectWithSink();
    const [held] = (await holdMessages(fixture)) as [string];
    expect((await post(`/v1/messages/${held}/cancel`, fixture.apiToken.token)).statusCode).toBe(202);
    expect(await statusOf(held)).toBe("cancelled");

    // A queued message (sent through the API while the worker is not told: it has no sink issue).
    const submitted = await post("/v1/messages", fixture.apiToken.token, {
      from: "app@example.com",
      to: ["user@example.net"],
      subject: "queued",
      text: "hello",
    });
    expect(submitted.statusCode).toBe(202);
    const queued = submitted.json().id as string;
    for (const action of ["approve", "deny"]) {
      const refused = await post(`/v1/messages/${queued}/${action}`, fixture.apiToken.token);
      expect(refused.statusCode).toBe(409);
      expect(refused.json().error).toMatchObject({ code: "invalid_transition" });
      expect(refused.json().error.message).toContain("only held messages");
    }
    const other = await projectWithSink();
    const foreign = await post(`/v1/messages/${held}/approve`, other.fixture.apiToken.token);
    expect(foreign.statusCode).toBe(404);
  });

  it("operators approve and deny under /admin/projects/:projectId, audited as admin", async () => {
    const { sink, fixture } = await projectWithSink();
    const [first, second] = (await holdMessages(fixture, 2)) as [string, string];
    const base = `/admin/projects/${fixture.project.id}/messages`;
    expect((await post(`${base}/${first}/approve`, ctx.config.adminToken)).statusCode).toBe(202);
    expect((await post(`${base}/${second}/deny`, ctx.config.adminToken)).statusCode).toBe(202);
    await until(() => sink.messages.length === 1, "the approved message at the sink");
    expect(await statusOf(second)).toBe("denied");
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: fixture.project.id, action: { in: ["message.approved", "message.denied"] } },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => [a.action, a.actor])).toEqual([
      ["message.approved", "admin"],
      ["message.denied", "admin"],
    ]);
  });
});

describe("a rule's hold over a real SMTP session", () => {
  async function sendOverSmtp(fixture: ProjectFixture, to: string): Promise<string> {
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: smtp.ports.smtp,
      name: "client.test",
      requireTLS: true,
      auth: { user: fixture.smtp.username, pass: fixture.smtp.password },
      tls: { rejectUnauthorized: false },
    });
    try {
      const { response } = await transport.sendMail({
        from: "app@example.com",
        to,
        subject: "rule",
        text: "ruled",
      });
      expect(response).toMatch(/^250 /);
      return /queued as ([0-9a-f-]{36})/.exec(response)?.[1] as string;
    } finally {
      transport.close();
    }
  }

  async function holdRule(fixture: ProjectFixture) {
    const put = await api.inject({
      method: "PUT",
      url: "/v1/rules",
      headers: bearer(fixture.apiToken.token),
      payload: { version: 0, rules: [{ name: "review", match: { to: "*@review.example" }, action: "hold" }] },
    });
    expect(put.statusCode).toBe(200);
  }

  it("holds the message (250, held, no job), then approve delivers its bytes to the sink", async () => {
    const { sink, fixture } = await projectWithSink();
    await holdRule(fixture);
    const id = await sendOverSmtp(fixture, "someone@review.example");
    expect(await statusOf(id)).toBe("held");
    expect(await hasJob(id)).toBe(false);
    // Another recipient matches no rule: delivered as usual.
    const other = await sendOverSmtp(fixture, "someone@example.net");
    await until(() => sink.messages.length === 1, "the unheld message at the sink");
    expect(sink.messages[0]?.rcptTo).toEqual(["someone@example.net"]);
    expect((await post(`/v1/messages/${id}/approve`, fixture.apiToken.token)).statusCode).toBe(202);
    await until(() => sink.messages.length === 2, "the approved message at the sink");
    expect(sink.messages[1]?.rcptTo).toEqual(["someone@review.example"]);
    expect(sink.messages[1]?.raw.toString()).toContain("ruled");
    expect(await statusOf(other)).toBe("delivered");
  });

  it("in a sandbox project, a held message is stored sandboxed: nothing to approve, nothing sent", async () => {
    const { sink, fixture } = await projectWithSink();
    await holdRule(fixture);
    expect((await patchProject(fixture.project.id, { mode: "sandbox" })).statusCode).toBe(200);
    const id = await sendOverSmtp(fixture, "someone@review.example");
    expect(await statusOf(id)).toBe("sandboxed");
    expect((await post(`/v1/messages/${id}/approve`, fixture.apiToken.token)).statusCode).toBe(409);
    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);
  });
});

describe("the hold expiry", () => {
  it("holdExpiry deny: after holdTtlMinutes the sweeper denies it with its event; never at the sink", async () => {
    const { sink, fixture } = await projectWithSink();
    expect(
      (await patchProject(fixture.project.id, { holdTtlMinutes: 5, holdExpiry: "deny" })).statusCode,
    ).toBe(200);
    const [id] = (await holdMessages(fixture)) as [string];
    // Before its time nothing happens.
    const early = await sweepAt(new Date(Date.now() + 4 * 60_000));
    expect(early.expiredHolds).toEqual({ approved: 0, denied: 0 });
    expect(await statusOf(id)).toBe("held");

    const late = await sweepAt(new Date(Date.now() + 6 * 60_000));
    expect(late.expiredHolds).toEqual({ approved: 0, denied: 1 });
    expect(await statusOf(id)).toBe("denied");
    expect(await eventsOf(id)).toEqual([
      expect.objectContaining({ type: "message.held" }),
      { type: "message.denied", data: { expired: true } },
    ]);
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: fixture.project.id, action: "message.denied" },
    });
    expect(audit.map((a) => [a.actor, a.details])).toEqual([["system", { messageId: id, expired: true }]]);
    expect(await hasJob(id)).toBe(false);
    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);
    // Settled once: the next sweep finds nothing.
    expect((await sweepAt(new Date(Date.now() + 7 * 60_000))).expiredHolds).toEqual({
      approved: 0,
      denied: 0,
    });
  });

  it("holdExpiry approve: after holdTtlMinutes the sweeper approves it and the worker delivers it", async () => {
    const { sink, fixture } = await projectWithSink();
    expect(
      (await patchProject(fixture.project.id, { holdTtlMinutes: 1, holdExpiry: "approve" })).statusCode,
    ).toBe(200);
    const [id] = (await holdMessages(fixture)) as [string];
    const result = await sweepAt(new Date(Date.now() + 2 * 60_000));
    expect(result.expiredHolds).toEqual({ approved: 1, denied: 0 });
    await until(() => sink.messages.length === 1, "the expired-approved message at the sink");
    expect(sink.messages[0]?.raw.toString()).toContain(`hello ${id}`);
    await until(async () => (await statusOf(id)) === "delivered", "the message delivered");
    expect((await eventsOf(id)).map((e) => e.type)).toEqual([
      "message.held",
      "message.approved",
      "message.delivered",
    ]);
  });
});

describe("POST /v1/messages/actions with approve and deny", () => {
  it("approves 1,000 held messages in one action: every one delivered, one audit event", async () => {
    const { sink, fixture } = await projectWithSink();
    const ids = await holdMessages(fixture, 1_000);
    const filter = { status: "held" };
    const dry = await post("/v1/messages/actions", fixture.apiToken.token, {
      action: "approve",
      filter,
      dryRun: true,
    });
    expect(dry.statusCode).toBe(200);
    expect(dry.json()).toEqual({ matched: 1_000, changed: 1_000 });
    expect(sink.messages).toHaveLength(0);

    const run = await post("/v1/messages/actions", fixture.apiToken.token, { action: "approve", filter });
    expect(run.statusCode).toBe(200);
    expect(run.json()).toEqual({ matched: 1_000, changed: 1_000 });
    await until(() => sink.messages.length >= 1_000, "1,000 approved messages at the sink", 180_000);
    const delivered = await ctx.db.message.count({
      where: { projectId: fixture.project.id, status: "delivered" },
    });
    await until(
      async () =>
        (await ctx.db.message.count({ where: { projectId: fixture.project.id, status: "delivered" } })) ===
        1_000,
      `1,000 delivered (${delivered} so far)`,
      60_000,
    );
    const arrived = new Set(sink.messages.map((m) => /hello ([0-9a-f-]{36})/.exec(m.raw.toString())?.[1]));
    expect(ids.every((id) => arrived.has(id))).toBe(true);
    const bulkAudit = await ctx.db.auditEvent.findMany({
      where: { projectId: fixture.project.id, action: "message.bulk_action" },
    });
    expect(bulkAudit).toHaveLength(1);
    expect(bulkAudit[0]?.details).toMatchObject({ action: "approve", matched: 1_000, changed: 1_000 });
    expect(
      await ctx.db.messageEvent.count({ where: { projectId: fixture.project.id, type: "message.approved" } }),
    ).toBe(1_000);
    // Nothing held is left to act on.
    const again = await post("/v1/messages/actions", fixture.apiToken.token, { action: "deny", filter });
    expect(again.json()).toEqual({ matched: 0, changed: 0 });
  }, 300_000);

  it("denies the held messages a filter matches, and no other", async () => {
    const { sink, fixture } = await projectWithSink();
    const held = await holdMessages(fixture, 3);
    const run = await post("/v1/messages/actions", fixture.apiToken.token, { action: "deny", filter: {} });
    expect(run.json()).toEqual({ matched: 3, changed: 3 });
    for (const id of held) expect(await statusOf(id)).toBe("denied");
    expect(
      await ctx.db.messageEvent.count({ where: { projectId: fixture.project.id, type: "message.denied" } }),
    ).toBe(3);
    expect(sink.messages).toHaveLength(0);
  });
});

describe("project settings", () => {
  it("PATCH /admin/projects/:id sets them, audited; GET /v1/project reads them without the upstream", async () => {
    const { fixture } = await projectWithSink();
    const before = await api.inject({
      method: "GET",
      url: "/v1/project",
      headers: bearer(fixture.apiToken.token),
    });
    expect(before.statusCode).toBe(200);
    expect(before.json()).toMatchObject({
      id: fixture.project.id,
      mode: "live",
      holdTtlMinutes: 1440,
      holdExpiry: "deny",
      dedupWindowSeconds: 0,
    });
    expect(before.json()).not.toHaveProperty("upstream");

    const settings = { mode: "sandbox", holdTtlMinutes: 90, holdExpiry: "approve", dedupWindowSeconds: 300 };
    const patched = await patchProject(fixture.project.id, settings);
    expect(patched.statusCode).toBe(200);
    expect(patched.json()).toMatchObject(settings);
    const after = await api.inject({
      method: "GET",
      url: "/v1/project",
      headers: bearer(fixture.apiToken.token),
    });
    expect(after.json()).toMatchObject(settings);
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: fixture.project.id, action: "project.updated" },
    });
    expect(audit?.details).toEqual(settings);

    for (const [body, field] of [
      [{ holdExpiry: "later" }, "holdExpiry"],
      [{ mode: "test" }, "mode"],
      [{ holdTtlMinutes: 0 }, "holdTtlMinutes"],
      [{ dedupWindowSeconds: -1 }, "dedupWindowSeconds"],
    ] as const) {
      const refused = await patchProject(fixture.project.id, body);
      expect(refused.statusCode).toBe(400);
      expect(refused.json().error.message).toContain(field);
    }
    expect((await api.inject({ method: "GET", url: "/v1/project" })).statusCode).toBe(401);
  });
});

describe("a sandbox project", () => {
  async function sandboxProject() {
    const project = await projectWithSink();
    expect((await patchProject(project.fixture.project.id, { mode: "sandbox" })).statusCode).toBe(200);
    return project;
  }

  it("over SMTP: answered 250, stored sandboxed with its message.accepted event, never at the sink", async () => {
    const { sink, fixture } = await sandboxProject();
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: smtp.ports.smtp,
      name: "client.test",
      requireTLS: true,
      auth: { user: fixture.smtp.username, pass: fixture.smtp.password },
      tls: { rejectUnauthorized: false },
    });
    let response: string;
    try {
      ({ response } = await transport.sendMail({
        from: "app@example.com",
        to: "user@example.net",
        subject: "sandbox",
        text: "hello",
      }));
    } finally {
      transport.close();
    }
    const id = /queued as ([0-9a-f-]{36})/.exec(response)?.[1] as string;
    expect(response).toMatch(/^250 /);
    expect(await statusOf(id)).toBe("sandboxed");
    const events = await eventsOf(id);
    expect(events.map((e) => e.type)).toEqual(["message.accepted"]);
    expect(events[0]?.data).toMatchObject({ status: "sandboxed", recipients: ["user@example.net"] });
    expect(await hasJob(id)).toBe(false);
    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);
    expect(await statusOf(id)).toBe("sandboxed");
    const listed = await api.inject({
      method: "GET",
      url: "/v1/messages?status=sandboxed",
      headers: bearer(fixture.apiToken.token),
    });
    expect(listed.json().items.map((m: { id: string }) => m.id)).toEqual([id]);
  });

  it("over HTTP: 202, stored sandboxed, never at the sink; the checks still apply", async () => {
    const { sink, fixture } = await sandboxProject();
    await ctx.db.project.update({
      where: { id: fixture.project.id },
      data: { senderDomains: ["example.com"] },
    });
    const submitted = await post("/v1/messages", fixture.apiToken.token, {
      from: "app@example.com",
      to: ["user@example.net"],
      subject: "sandbox",
      text: "hello",
    });
    expect(submitted.statusCode).toBe(202);
    const id = submitted.json().id as string;
    expect(await statusOf(id)).toBe("sandboxed");
    expect((await eventsOf(id))[0]).toMatchObject({
      type: "message.accepted",
      data: { status: "sandboxed" },
    });
    await runStaleJob(id, fixture.project.id);
    expect(sink.messages).toHaveLength(0);

    const foreignSender = await post("/v1/messages", fixture.apiToken.token, {
      from: "app@elsewhere.example",
      to: ["user@example.net"],
      subject: "sandbox",
      text: "hello",
    });
    expect(foreignSender.statusCode).toBe(403);
    const stats = await api.inject({
      method: "GET",
      url: "/v1/stats",
      headers: bearer(fixture.apiToken.token),
    });
    expect(stats.json().counts).toMatchObject({ accepted: 1, sandboxed: 1, queued: 0 });
  });
});
