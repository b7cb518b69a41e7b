import { randomBytes } from "node:crypto";
import { createDatabase, sqlPoolOf, uuidv7 } from "@postern/db";
import {
  type AttemptRecord,
  bodySliceBytes,
  createDeliveryStore,
  type DeliveryStore,
  type DeliveryStoreOptions,
  loadSql,
  recordSql,
} from "@postern/messages";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

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
    event: { attempt: loaded.attempts + 1, recipients: [] },
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

  it("loads a body of every byte value (including NUL, CR, LF) byte for byte", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: "smtp://127.0.0.1:2525" });
    // 1 MiB of all 256 byte values in turn: many lines of the base64 text it travels as.
    const raw = Buffer.alloc(1024 * 1024, Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    const message = await createQueuedMessageFixture(ctx.db, project, { raw });
    expect((await store.load(message.id))?.body?.equals(raw)).toBe(true);
  });

  it("loads bodies at the edges of its slices byte for byte, an empty one as empty and a missing one as null", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: "smtp://127.0.0.1:2525" });
    const to = ["a@example.net", "b@example.net"];
    const sizes = [0, 1, bodySliceBytes - 1, bodySliceBytes, bodySliceBytes + 1, 3 * bodySliceBytes];
    const bodies = sizes.map((size) => randomBytes(size));
    const messages = await Promise.all(
      bodies.map((raw) => createQueuedMessageFixture(ctx.db, project, { to, raw })),
    );
    const missing = await createQueuedMessageFixture(ctx.db, project, { to });
    await ctx.db.messageBody.delete({ where: { messageId: missing.id } });
    // All in one statement, as concurrent deliveries share it.
    const loaded = await Promise.all([...messages, missing].map((m) => store.load(m.id)));
    expect(loaded.map((m) => m?.body?.length ?? null)).toEqual([...sizes, null]);
    const equal = loaded.slice(0, sizes.length).map((m, i) => m?.body?.equals(bodies[i] as Buffer));
    expect(equal).toEqual(sizes.map(() => true));
    expect(loaded.map((m) => m?.recipients.length)).toEqual([...sizes.map(() => 2), 2]);
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

/**
 * A store whose statements are counted (which fail with `failWith` when given): records through
 * `query`, loads through a connection of their own (`connect`).
 */
function countingStore(options: DeliveryStoreOptions & { failWith?: Error } = {}) {
  const counted = { statements: 0 };
  const query = ((...args: Parameters<pg.Pool["query"]>) => {
    counted.statements++;
    if (options.failWith) return Promise.reject(options.failWith);
    return (pool.query as (...a: typeof args) => unknown)(...args);
  }) as pg.Pool["query"];
  const connect = (() => {
    counted.statements++;
    if (options.failWith) return Promise.reject(options.failWith);
    return pool.connect();
  }) as pg.Pool["connect"];
  return { store: createDeliveryStore({ query, connect }, options), counted };
}

async function statsOf(projectId: string) {
  const stats = await ctx.db.messageStatsHour.groupBy({
    by: ["status"],
    where: { projectId },
    _sum: { count: true },
  });
  return Object.fromEntries(stats.map((s) => [s.status, s._sum.count]));
}

describe("concurrent deliveries share statements (group commit)", () => {
  it("loads asked for in the same tick are one query; each caller gets its own message", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: "smtp://127.0.0.1:2525" });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const message = await createQueuedMessageFixture(ctx.db, project, {
        to: [`rcpt${i}@example.net`],
        raw: `Subject: number ${i}\r\n\r\nbody\r\n`,
      });
      ids.push(message.id);
    }
    const { store, counted } = countingStore();
    const unknown = uuidv7();
    const loaded = await Promise.all([...ids.map((id) => store.load(id)), store.load(unknown)]);

    expect(counted.statements).toBe(1);
    expect(loaded.pop()).toBeUndefined();
    loaded.forEach((message, i) => {
      expect(message?.id).toBe(ids[i]);
      expect(message?.body?.toString()).toBe(`Subject: number ${i}\r\n\r\nbody\r\n`);
      expect(message?.recipients.map((r) => r.address)).toEqual([`rcpt${i}@example.net`]);
    });
  });

  it("a batch holds at most maxBatchMessages; the rest follow in further statements", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await createQueuedMessageFixture(ctx.db, project)).id);
    const { store, counted } = countingStore({ maxBatchMessages: 4 });
    const loaded = await Promise.all(ids.map((id) => store.load(id)));
    expect(counted.statements).toBe(3);
    expect(loaded.map((m) => m?.id)).toEqual(ids);
  });

  it("loads asked for within the spacing after a statement started wait and share the next one", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await createQueuedMessageFixture(ctx.db, project)).id);
    const { store, counted } = countingStore({ statementSpacingMs: 200 });
    const first = await store.load(ids[0] as string);
    // The first statement returned long before its 200 ms are over: the three asked for one by
    // one after it wait for them, and go out together.
    const startedAt = performance.now();
    const rest: Promise<unknown>[] = [];
    for (const id of ids.slice(1)) {
      rest.push(store.load(id));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const loaded = await Promise.all(rest);
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(100);
    expect(counted.statements).toBe(2);
    expect([first, ...loaded].map((m) => (m as { id: string } | undefined)?.id)).toEqual(ids);

    // A full batch does not wait.
    const full = countingStore({ statementSpacingMs: 60_000, maxBatchMessages: 2 });
    await full.store.load(ids[0] as string);
    await Promise.all([full.store.load(ids[1] as string), full.store.load(ids[2] as string)]);
    expect(full.counted.statements).toBe(2);
  });

  it("records share one statement; a superseded one writes nothing while its neighbours are written", async () => {
    const stale = await queued();
    const second = await queued();
    const third = await queued();
    expect(await store.record(delivered(stale.loaded, new Date()))).toBe(true);

    const { store: batching, counted } = countingStore();
    const now = new Date(Date.now() - 2_000);
    const superseded = delivered(stale.loaded, now);
    superseded.status = "failed";
    superseded.recipients = superseded.recipients.map((r) => ({ ...r, status: "failed", code: 550 }));
    const claims = await Promise.all([
      batching.record(superseded),
      batching.record(delivered(second.loaded, now)),
      batching.record(delivered(third.loaded, now)),
    ]);

    expect(counted.statements).toBe(1);
    expect(claims).toEqual([false, true, true]);
    const staleRow = await ctx.db.message.findUniqueOrThrow({
      where: { id: stale.message.id },
      include: { recipients: true, deliveryAttempts: true },
    });
    expect(staleRow).toMatchObject({ status: "delivered", attempts: 1 });
    expect(staleRow.deliveryAttempts).toHaveLength(1);
    expect(staleRow.recipients.every((r) => r.status === "delivered" && r.code === 250)).toBe(true);
    expect(
      await ctx.db.auditEvent.count({ where: { projectId: stale.project.id, action: "message.failed" } }),
    ).toBe(0);

    for (const { project, message } of [second, third]) {
      const row = await ctx.db.message.findUniqueOrThrow({
        where: { id: message.id },
        include: { recipients: true, deliveryAttempts: true },
      });
      expect(row).toMatchObject({ status: "delivered", attempts: 1 });
      expect(row.updatedAt.getTime()).toBe(now.getTime());
      expect(row.deliveryAttempts.map((a) => [a.number, a.outcome])).toEqual([[1, "delivered"]]);
      expect(row.recipients.map((r) => [r.status, r.code, r.updatedAt.getTime()])).toEqual([
        ["delivered", 250, now.getTime()],
        ["delivered", 250, now.getTime()],
      ]);
      const audit = await ctx.db.auditEvent.findMany({
        where: { projectId: project.id, action: "message.delivered" },
      });
      expect(
        audit.map((a) => [a.createdAt.getTime(), (a.details as { messageId: string }).messageId]),
      ).toEqual([[now.getTime(), message.id]]);
      expect(await statsOf(project.id)).toEqual({ queued: 0, delivered: 1 });
    }
  });

  it("two runs of one message in the same tick go in separate statements: exactly one claims", async () => {
    const { message, loaded } = await queued();
    const { store: batching, counted } = countingStore();
    const claims = await Promise.all([
      batching.record(delivered(loaded, new Date())),
      batching.record({ ...delivered(loaded, new Date()), status: "failed" }),
    ]);
    expect(counted.statements).toBe(2);
    expect(claims).toEqual([true, false]);
    const row = await ctx.db.message.findUniqueOrThrow({
      where: { id: message.id },
      include: { deliveryAttempts: true },
    });
    expect(row.status).toBe("delivered");
    expect(row.deliveryAttempts.map((a) => a.outcome)).toEqual(["delivered"]);
  });

  it("a record PostgreSQL refuses fails alone: the others of its batch are recorded", async () => {
    const first = await queued();
    const poisoned = await queued();
    const last = await queued();
    const bad = delivered(poisoned.loaded, new Date());
    bad.attempt.response = "250 ok\u0000";

    const { store: batching, counted } = countingStore();
    const settled = await Promise.allSettled([
      batching.record(delivered(first.loaded, new Date())),
      batching.record(bad),
      batching.record(delivered(last.loaded, new Date())),
    ]);

    // The batch, then each of its three records alone.
    expect(counted.statements).toBe(4);
    expect(settled[0]).toEqual({ status: "fulfilled", value: true });
    expect(settled[1]).toMatchObject({ status: "rejected", reason: { code: "22021" } });
    expect(settled[2]).toEqual({ status: "fulfilled", value: true });
    const statuses = await ctx.db.message.findMany({
      where: { id: { in: [first.message.id, poisoned.message.id, last.message.id] } },
      select: { id: true, status: true, _count: { select: { deliveryAttempts: true } } },
    });
    expect(new Map(statuses.map((m) => [m.id, [m.status, m._count.deliveryAttempts]]))).toEqual(
      new Map([
        [first.message.id, ["delivered", 1]],
        [poisoned.message.id, ["queued", 0]],
        [last.message.id, ["delivered", 1]],
      ]),
    );
  });

  it("a batch that fails for any other reason fails each of its callers with that error", async () => {
    const { loaded } = await queued();
    const { loaded: other } = await queued();
    const lost = new Error("Connection terminated unexpectedly");
    const { store: broken, counted } = countingStore({ failWith: lost });
    const settled = await Promise.allSettled([
      broken.record(delivered(loaded, new Date())),
      broken.record(delivered(other, new Date())),
      broken.load(loaded.id),
      broken.load(other.id),
    ]);
    expect(settled.map((s) => (s.status === "rejected" ? s.reason : s.value))).toEqual([
      lost,
      lost,
      lost,
      lost,
    ]);
    // One record statement and one load statement, not retried message by message.
    expect(counted.statements).toBe(2);
  });
});

describe("plans of the hot-path statements", () => {
  // A freshly migrated database has no statistics, as a table that grew since its last ANALYZE
  // has stale ones: the plans must reach every row by key anyway, or each statement costs as much
  // as the tables (every retained body, every queued message) are large.
  it.each([
    ["load", loadSql],
    ["record", recordSql],
  ])("%s reaches rows by primary key, never by a scan of a table or of the status index", async (_, sql) => {
    const { rows } = await pool.query<{ "QUERY PLAN": string }>(`EXPLAIN (GENERIC_PLAN) ${sql}`);
    const plan = rows.map((row) => row["QUERY PLAN"]).join("\n");
    expect(plan).not.toMatch(/Seq Scan on "(Message|MessageBody|MessageRecipient|Project)"/);
    expect(plan).not.toContain("Message_status_nextAttemptAt_idx");
    expect(plan).toContain("Message_pkey");
  });

  it("in the worker's database the load runs its generic plan instead of being replanned at every run", async () => {
    const plansOfLoad = async (genericPlans: boolean) => {
      const db = createDatabase(ctx.databaseUrl, { max: 1, genericPlans });
      try {
        const sql = sqlPoolOf(db);
        const own = createDeliveryStore(sql);
        const { message } = await queued();
        for (let run = 0; run < 8; run++) await own.load(message.id);
        const { rows } = await sql.query<{ generic_plans: string; custom_plans: string }>(
          `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'postern-delivery-load'`,
        );
        return rows[0];
      } finally {
        await db.$disconnect();
      }
    };
    expect(await plansOfLoad(true)).toEqual({ generic_plans: "8", custom_plans: "0" });
    // Left to choose, PostgreSQL plans it afresh every time (the reason for the option).
    expect(await plansOfLoad(false)).toEqual({ generic_plans: "0", custom_plans: "8" });
  });
});
