import { buildApi } from "@postern/api";
import { sqlPoolOf } from "@postern/db";
import {
  allowedTransitions,
  checkAction,
  checkTransition,
  createDeliveryStore,
  deliverableStatuses,
  lifecycleActions,
  type MessageEventRow,
  retryMessage,
} from "@postern/messages";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
let smtp: RunningSmtp;
let worker: RunningWorker;
let api: FastifyInstance;
const sinks: SmtpSink[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1", DELIVERY_MAX_ATTEMPTS: "2" });
  const log = createLogger({ level: "silent" });
  smtp = await startSmtp({ ...ctx, log, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
  });
  api = await buildApi({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log,
    metrics: createMetricsRegistry(),
  });
});

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  await smtp?.stop();
  for (const sink of sinks) await sink.stop();
  await ctx?.close();
});

async function projectWithSink(reply?: SmtpSink["rcptReply"]) {
  const sink = await SmtpSink.start({});
  sinks.push(sink);
  if (reply) sink.rcptReply = reply;
  const fixture = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  return { sink, fixture };
}

/** Sends one message over a real SMTP session to Postern; returns its stored id. */
async function send(fixture: ProjectFixture, to: string[]): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp.ports.smtp,
    name: "client.test",
    requireTLS: true,
    auth: { user: fixture.smtp.username, pass: fixture.smtp.password },
    tls: { rejectUnauthorized: false },
  });
  try {
    await transport.sendMail({ from: "app@example.com", to, subject: "Events", text: "hello" });
  } finally {
    transport.close();
  }
  const message = await ctx.db.message.findFirstOrThrow({
    where: { projectId: fixture.project.id },
    orderBy: { createdAt: "desc" },
  });
  return message.id;
}

async function eventsOf(fixture: ProjectFixture, messageId: string) {
  const response = await api.inject({
    method: "GET",
    url: `/v1/messages/${messageId}/events`,
    headers: { authorization: `Bearer ${fixture.apiToken.token}` },
  });
  expect(response.statusCode).toBe(200);
  return response.json().items as Array<{ id: string; type: string; data: Record<string, unknown> }>;
}

/** Waits (polling the route) until the message's events have these types. */
async function eventsUntil(fixture: ProjectFixture, messageId: string, types: string[]) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const events = await eventsOf(fixture, messageId);
    if (events.length >= types.length || Date.now() > deadline) {
      expect(events.map((e) => e.type)).toEqual(types);
      return events;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("events: every status change writes one, in the statement that makes it", () => {
  it("accepted over SMTP, then delivered by the worker, with per-recipient results", async () => {
    const { fixture } = await projectWithSink();
    const id = await send(fixture, ["a@example.net", "b@example.net"]);
    const events = await eventsUntil(fixture, id, ["message.accepted", "message.delivered"]);
    expect(events[0]?.data).toMatchObject({
      mailFrom: "app@example.com",
      recipients: ["a@example.net", "b@example.net"],
    });
    expect(events[1]?.data).toMatchObject({ attempt: 1 });
    // Every recipient, in the order of their rows (not of RCPT TO).
    const results = events[1]?.data.recipients as Array<{ address: string }>;
    expect([...results].sort((a, b) => a.address.localeCompare(b.address))).toMatchObject([
      { address: "a@example.net", status: "delivered", code: 250 },
      { address: "b@example.net", status: "delivered", code: 250 },
    ]);
    expect(BigInt(events[0]?.id ?? 0) < BigInt(events[1]?.id ?? 0)).toBe(true);
  });

  it("deferred by a 451, then failed when the attempts run out", async () => {
    const { fixture } = await projectWithSink(() => ({ code: 451, message: "4.3.0 try later" }));
    const id = await send(fixture, ["later@example.net"]);
    const events = await eventsUntil(fixture, id, ["message.accepted", "message.deferred", "message.failed"]);
    expect(events[1]?.data).toMatchObject({
      attempt: 1,
      recipients: [{ address: "later@example.net", status: "pending", code: 451, enhancedCode: "4.3.0" }],
    });
    expect(events[2]?.data).toMatchObject({
      attempt: 2,
      recipients: [{ address: "later@example.net", status: "failed", code: 451 }],
    });
  });

  it("failed by a 550; a retry writes message.retried; a delivered message's retry is refused and writes nothing", async () => {
    const { sink, fixture } = await projectWithSink(() => ({ code: 550, message: "5.1.1 no such user" }));
    const id = await send(fixture, ["nobody@example.net"]);
    const events = await eventsUntil(fixture, id, ["message.accepted", "message.failed"]);
    expect(events[1]?.data).toMatchObject({
      recipients: [{ address: "nobody@example.net", status: "failed", code: 550, enhancedCode: "5.1.1" }],
    });

    sink.rcptReply = () => undefined;
    const retried = await api.inject({
      method: "POST",
      url: `/v1/messages/${id}/retry`,
      headers: { authorization: `Bearer ${fixture.apiToken.token}` },
    });
    expect(retried.statusCode).toBe(202);
    await eventsUntil(fixture, id, [
      "message.accepted",
      "message.failed",
      "message.retried",
      "message.delivered",
    ]);

    const refused = await retryMessage(ctx.db, {
      projectId: fixture.project.id,
      id,
      actor: "test",
      ip: null,
    });
    expect(refused).toEqual({ ok: false, reason: "invalid_transition", from: "delivered", to: "queued" });
    expect(await eventsOf(fixture, id)).toHaveLength(4);
    const message = await ctx.db.message.findUniqueOrThrow({ where: { id } });
    expect(message.status).toBe("delivered");
  });

  it("a status change and its event are both or neither: an event PostgreSQL refuses undoes the change", async () => {
    const { fixture } = await projectWithSink();
    const message = await createQueuedMessageFixture(ctx.db, fixture.project, { to: ["x@example.net"] });
    const store = createDeliveryStore(sqlPoolOf(ctx.db));
    const loaded = await store.load(message.id);
    if (!loaded) throw new Error("not loaded");
    const now = new Date();
    const record = {
      messageId: loaded.id,
      loadedAttempts: 0,
      status: "delivered" as const,
      nextAttemptAt: null,
      lastError: null,
      now,
      attempt: {
        id: crypto.randomUUID(),
        number: 1,
        startedAt: now,
        durationMs: 1,
        upstreamHost: "sink",
        code: 250,
        enhancedCode: "2.0.0",
        response: "ok",
        recipients: [],
      },
      recipients: loaded.recipients.map((r) => ({ ...r, status: "delivered" as const, code: 250 })),
      audit: null,
    };
    // The event row is written after the status update in the same statement; a NULL data
    // breaks its NOT NULL constraint, and nothing of the statement stays.
    await expect(store.record({ ...record, event: undefined })).rejects.toMatchObject({ code: "23502" });
    const after = await ctx.db.message.findUniqueOrThrow({
      where: { id: message.id },
      include: { deliveryAttempts: true, events: true, recipients: true },
    });
    expect(after.status).toBe("queued");
    expect(after.deliveryAttempts).toEqual([]);
    expect(after.events).toEqual([]);
    expect(after.recipients.map((r) => r.status)).toEqual(["pending"]);

    expect(await store.record({ ...record, event: { attempt: 1, recipients: [] } })).toBe(true);
    const events = await ctx.db.messageEvent.findMany({ where: { messageId: message.id } });
    expect(events.map((e) => e.type)).toEqual(["message.delivered"]);
  });

  it("a delivery record moves a message from each status exactly as the transition table says, with its event", async () => {
    const { fixture } = await projectWithSink();
    const store = createDeliveryStore(sqlPoolOf(ctx.db));
    const statuses = Object.keys(allowedTransitions) as Array<keyof typeof allowedTransitions>;
    const outcomes = ["delivered", "deferred", "failed"] as const;
    const seen: string[] = [];
    for (const from of statuses) {
      for (const to of outcomes) {
        const message = await createQueuedMessageFixture(ctx.db, fixture.project);
        await ctx.db.message.update({ where: { id: message.id }, data: { status: from } });
        const recipients = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
        const now = new Date();
        const recorded = await store.record({
          messageId: message.id,
          loadedAttempts: 0,
          status: to,
          nextAttemptAt: to === "deferred" ? new Date(now.getTime() + 60_000) : null,
          lastError: null,
          now,
          attempt: {
            id: crypto.randomUUID(),
            number: 1,
            startedAt: now,
            durationMs: 1,
            upstreamHost: "sink",
            code: 250,
            enhancedCode: null,
            response: null,
            recipients: [],
          },
          recipients: recipients.map(({ id, status, code, enhancedCode, response }) => ({
            id,
            status,
            code,
            enhancedCode,
            response,
          })),
          audit: null,
          event: { attempt: 1, recipients: [] },
        });
        const allowed = checkTransition(from, to).ok;
        const after = await ctx.db.message.findUniqueOrThrow({
          where: { id: message.id },
          include: { events: true },
        });
        const outcome = `${from} → ${to}: ${recorded ? "recorded" : "refused"}, ${after.status}, [${after.events.map((e) => e.type)}]`;
        expect(outcome).toBe(
          `${from} → ${to}: ${allowed ? `recorded, ${to}, [message.${to}]` : `refused, ${from}, []`}`,
        );
        seen.push(outcome);
      }
    }
    expect(seen).toHaveLength(statuses.length * outcomes.length);
  });

  it("the transition table refuses what it does not list", () => {
    expect(checkTransition("delivered", "queued")).toEqual({
      ok: false,
      reason: "invalid_transition",
      from: "delivered",
      to: "queued",
    });
    expect(checkTransition("failed", "delivered").ok).toBe(false);
    expect(checkTransition("queued", "queued").ok).toBe(false);
    expect(checkTransition("deferred", "queued").ok).toBe(true);
    expect(allowedTransitions.delivered).toEqual([]);
  });

  it("every lifecycle action is a move the table allows; held moves only by them, denied and sandboxed are final", () => {
    for (const [action, { from, to }] of Object.entries(lifecycleActions)) {
      for (const status of from)
        expect(checkTransition(status, to).ok, `${action} from ${status}`).toBe(true);
    }
    expect(checkAction("approve", "held")).toEqual({ ok: true });
    expect(checkAction("approve", "queued")).toEqual({
      ok: false,
      reason: "invalid_transition",
      from: "queued",
      to: "queued",
    });
    // A retry leads to queued as an approve does, but never from held.
    expect(checkAction("retry", "held").ok).toBe(false);
    expect(allowedTransitions.held).toEqual(["queued", "denied", "cancelled"]);
    expect(allowedTransitions.denied).toEqual([]);
    expect(allowedTransitions.sandboxed).toEqual([]);
    expect(deliverableStatuses).toEqual(["queued", "deferred"]);
  });
});

describe("GET /v1/messages/:id/events and GET /v1/events", () => {
  it("another project's message is 404; the cursor pages oldest first without repeats; type filters", async () => {
    const { fixture } = await projectWithSink();
    const other = await projectWithSink();
    const first = await send(fixture, ["one@example.net"]);
    const second = await send(fixture, ["two@example.net"]);
    await eventsUntil(fixture, first, ["message.accepted", "message.delivered"]);
    await eventsUntil(fixture, second, ["message.accepted", "message.delivered"]);

    const foreign = await api.inject({
      method: "GET",
      url: `/v1/messages/${first}/events`,
      headers: { authorization: `Bearer ${other.fixture.apiToken.token}` },
    });
    expect(foreign.statusCode).toBe(404);
    expect(foreign.json().error.code).toBe("not_found");

    const read = async (query: string) => {
      const response = await api.inject({
        method: "GET",
        url: `/v1/events${query}`,
        headers: { authorization: `Bearer ${fixture.apiToken.token}` },
      });
      return response;
    };
    const seen: Array<{ messageId: string; type: string }> = [];
    let after: string | null = null;
    // Read as a client follows the stream: page by page with the cursor, polling when a page is
    // empty (an event shows once every older writing transaction has ended).
    const deadline = Date.now() + 15_000;
    while (seen.length < 4 && Date.now() < deadline) {
      const response = await read(`?limit=1${after ? `&after=${after}` : ""}`);
      expect(response.statusCode).toBe(200);
      const body = response.json() as { items: MessageEventRow[]; nextCursor: string | null };
      if (body.items.length === 0) {
        expect(body.nextCursor).toBe(after);
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      expect(body.items).toHaveLength(1);
      seen.push(...body.items.map((e) => ({ messageId: e.messageId, type: e.type })));
      after = body.nextCursor;
    }
    const end = (await read(`?after=${after}`)).json() as { items: unknown[]; nextCursor: string };
    expect(end).toEqual({ items: [], nextCursor: after });
    expect(seen).toHaveLength(4);
    expect(seen.filter((e) => e.messageId === first).map((e) => e.type)).toEqual([
      "message.accepted",
      "message.delivered",
    ]);
    expect(seen[0]).toEqual({ messageId: first, type: "message.accepted" });

    const delivered = (await read("?type=message.delivered")).json() as { items: MessageEventRow[] };
    expect(delivered.items.map((e) => e.messageId).sort()).toEqual([first, second].sort());
    expect(delivered.items.every((e) => e.type === "message.delivered")).toBe(true);

    const otherEvents = await api.inject({
      method: "GET",
      url: "/v1/events",
      headers: { authorization: `Bearer ${other.fixture.apiToken.token}` },
    });
    expect(otherEvents.json()).toEqual({ items: [], nextCursor: null });

    const bad = await read("?after=nonsense");
    expect(bad.statusCode).toBe(400);
  });
});
