import { uuidv7 } from "@postern/db";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AttemptRecord, createDeliveryStore, type DeliveryStore } from "../src/store";

let ctx: TestContext;
let store: DeliveryStore;
let pool: pg.Pool;

beforeAll(async () => {
  ctx = await createTestContext();
  // A session time zone 14 hours from UTC: the columns hold UTC whatever the session says.
  const url = new URL(ctx.databaseUrl);
  url.searchParams.set("options", "-c TimeZone=Pacific/Kiritimati");
  pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
  store = createDeliveryStore(pool);
});
afterAll(async () => {
  await pool?.end();
  await ctx?.close();
});

async function queued(to = ["a@example.net", "b@example.net"]) {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: "smtp://127.0.0.1:2525" });
  const message = await createQueuedMessageFixture(ctx.db, project, {
    to,
    raw: "Subject: x\r\n\r\nbody\r\n",
  });
  const loaded = await store.load(message.id);
  if (!loaded) throw new Error("not loaded");
  return { project, message, loaded };
}

function delivered(
  loaded: NonNullable<Awaited<ReturnType<DeliveryStore["load"]>>>,
  now: Date,
): AttemptRecord {
  const recipients = loaded.recipients.map((r) => ({
    id: r.id,
    status: "delivered" as const,
    code: 250,
    enhancedCode: "2.0.0",
    response: "250 2.0.0 Ok: queued",
  }));
  return {
    messageId: loaded.id,
    loadedAttempts: loaded.attempts,
    status: "delivered",
    nextAttemptAt: null,
    lastError: null,
    now,
    attempt: {
      id: uuidv7(now.getTime() - 40),
      number: loaded.attempts + 1,
      startedAt: new Date(now.getTime() - 40),
      durationMs: 40,
      upstreamHost: "127.0.0.1:2525",
      code: 250,
      enhancedCode: "2.0.0",
      response: "250 2.0.0 Ok: queued",
      recipients: [{ address: "a@example.net", outcome: "delivered" }],
    },
    recipients,
    audit: { action: "message.delivered", details: { messageId: loaded.id, attempts: 1 } },
  };
}

describe("the delivery store (raw SQL on the hot path)", () => {
  it("loads message, project upstream, body bytes and recipients in one query", async () => {
    const { project, message, loaded } = await queued();
    expect(loaded).toMatchObject({
      id: message.id,
      projectId: project.id,
      mailFrom: message.mailFrom,
      status: "queued",
      attempts: 0,
      upstreamUrl: project.upstreamUrl,
      upstreamSecret: null,
    });
    expect(loaded.createdAt.getTime()).toBe(message.createdAt.getTime());
    expect(loaded.body?.toString()).toBe("Subject: x\r\n\r\nbody\r\n");
    expect(loaded.recipients.map((r) => [r.address, r.status, r.code])).toEqual([
      ["a@example.net", "pending", null],
      ["b@example.net", "pending", null],
    ]);
    expect(await store.load(uuidv7())).toBeUndefined();
  });

  it("records status, attempt, recipients, audit event and stats in one statement, times in UTC", async () => {
    const { project, message, loaded } = await queued();
    const now = new Date(Date.now() - 1_000);
    const record = delivered(loaded, now);
    expect(await store.record(record)).toBe(true);

    const stored = await ctx.db.message.findUniqueOrThrow({
      where: { id: message.id },
      include: { recipients: true, deliveryAttempts: true },
    });
    expect(stored).toMatchObject({ status: "delivered", attempts: 1, lastError: null, nextAttemptAt: null });
    expect(stored.deliveredAt?.getTime()).toBe(now.getTime());
    expect(stored.completedAt?.getTime()).toBe(now.getTime());
    expect(stored.updatedAt.getTime()).toBe(now.getTime());
    expect(stored.recipients.every((r) => r.status === "delivered" && r.code === 250)).toBe(true);
    expect(stored.recipients.every((r) => r.updatedAt.getTime() === now.getTime())).toBe(true);
    const [attempt] = stored.deliveryAttempts;
    expect(attempt).toMatchObject({
      id: record.attempt.id,
      number: 1,
      outcome: "delivered",
      durationMs: 40,
      upstreamHost: "127.0.0.1:2525",
      code: 250,
      enhancedCode: "2.0.0",
      recipients: [{ address: "a@example.net", outcome: "delivered" }],
    });
    expect(attempt?.startedAt.getTime()).toBe(now.getTime() - 40);
    // A UUIDv7: version nibble 7, variant 10.
    expect(attempt?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

    const [audit] = await ctx.db.auditEvent.findMany({
      where: { projectId: project.id, action: "message.delivered" },
    });
    expect(audit).toMatchObject({
      actor: "system",
      ip: null,
      details: { messageId: message.id, attempts: 1 },
    });
    expect(audit?.createdAt.getTime()).toBe(now.getTime());

    // The statement-level triggers moved the message from `queued` to `delivered` in the stats.
    const stats = await ctx.db.messageStatsHour.groupBy({
      by: ["status"],
      where: { projectId: project.id },
      _sum: { count: true },
    });
    expect(Object.fromEntries(stats.map((s) => [s.status, s._sum.count]))).toEqual({
      queued: 0,
      delivered: 1,
    });
  });

  it("a deferral writes the retry time and no audit event; recipients left out are untouched", async () => {
    const { project, message, loaded } = await queued();
    const now = new Date();
    const retryAt = new Date(now.getTime() + 60_000);
    const [first, second] = loaded.recipients;
    if (!first || !second) throw new Error("two recipients expected");
    expect(
      await store.record({
        ...delivered(loaded, now),
        status: "deferred",
        nextAttemptAt: retryAt,
        lastError: "b@example.net: 451 4.3.0 try later",
        recipients: [
          { id: first.id, status: "delivered", code: 250, enhancedCode: "2.0.0", response: "ok" },
          {
            id: second.id,
            status: "pending",
            code: 451,
            enhancedCode: "4.3.0",
            response: "451 4.3.0 try later",
          },
        ],
        audit: null,
      }),
    ).toBe(true);
    const stored = await ctx.db.message.findUniqueOrThrow({
      where: { id: message.id },
      include: { recipients: true },
    });
    expect(stored).toMatchObject({ status: "deferred", attempts: 1, deliveredAt: null, completedAt: null });
    expect(stored.nextAttemptAt?.getTime()).toBe(retryAt.getTime());
    expect(stored.recipients.map((r) => [r.address, r.status, r.code, r.response])).toEqual([
      ["a@example.net", "delivered", 250, "ok"],
      ["b@example.net", "pending", 451, "451 4.3.0 try later"],
    ]);
    expect(
      await ctx.db.auditEvent.count({
        where: { projectId: project.id, action: { not: "message.accepted" } },
      }),
    ).toBe(0);
  });

  it("a second run of the same attempt records nothing (the guard on attempts and status)", async () => {
    const { project, message, loaded } = await queued();
    expect(await store.record(delivered(loaded, new Date()))).toBe(true);
    const again = delivered(loaded, new Date());
    again.recipients = again.recipients.map((r) => ({
      ...r,
      status: "failed",
      code: 550,
      response: "second run",
    }));
    expect(await store.record({ ...again, status: "failed" })).toBe(false);

    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(1);
    expect(
      await ctx.db.auditEvent.count({
        where: { projectId: project.id, action: { not: "message.accepted" } },
      }),
    ).toBe(1);
    const stored = await ctx.db.message.findUniqueOrThrow({
      where: { id: message.id },
      include: { recipients: true },
    });
    expect(stored.status).toBe("delivered");
    expect(stored.recipients.every((r) => r.status === "delivered")).toBe(true);
  });
});
