import { randomUUID } from "node:crypto";
import type { AuthenticatedClient } from "@postern/auth";
import { type SqlPool, sqlPoolOf } from "@postern/db";
import { freePort } from "@postern/embedded";
import { createDeliveryProducer, type DeliveryProducer, deliveryQueueName } from "@postern/queue";
import { type AcceptorOptions, createAcceptor, type MessageToAccept } from "@postern/smtp";
import { createLogger } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { Queue } from "bullmq";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
let producer: DeliveryProducer;
beforeAll(async () => {
  ctx = await createTestContext();
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});
afterAll(async () => {
  await producer.close();
  await ctx.close();
});

const log = createLogger({ level: "silent" });

/** The test database's pool, counting the statements the acceptor sends. */
function countingPool() {
  const pool = sqlPoolOf(ctx.db);
  const counted = { statements: 0, batchSizes: [] as number[], names: [] as string[] };
  const sql = {
    query: ((config: { name: string; text: string; values: unknown[] }) => {
      counted.statements++;
      counted.batchSizes.push((config.values[1] as string[]).length);
      counted.names.push(config.name);
      return pool.query(config);
    }) as SqlPool["query"],
  };
  return { sql, counted };
}

async function messages(count: number, options: { size?: number; subject?: (i: number) => string } = {}) {
  const { project, smtp } = await createProjectFixture(ctx.db, ctx.config);
  const client = {
    credentialId: smtp.credentialId,
    key: smtp.username,
    project: { ...project, senderDomains: [], verifiedDomains: [] },
  };
  return {
    project,
    list: Array.from({ length: count }, (_, i): MessageToAccept => {
      const subject = options.subject?.(i) ?? `message ${i}`;
      const head = `From: app@example.com\r\nSubject: ${subject}\r\n\r\n`;
      const body = "x".repeat(Math.max(0, (options.size ?? 0) - head.length));
      return {
        id: randomUUID(),
        client,
        ip: "192.0.2.10",
        mailFrom: "app@example.com",
        // Quotes and backslashes survive the array and JSON encodings of the statement.
        recipients: [
          `a${i}@example.org`,
          i === 0 ? '"quoted \\ \\"local\\""@example.org' : `b${i}@example.org`,
        ],
        bytes: Buffer.from(`${head}${body}\r\n`),
        headers: { messageId: `<m${i}@example.com>`, subject, from: ["app@example.com"], fromFields: 1 },
      };
    }),
  };
}

async function acceptAll(
  list: MessageToAccept[],
  sql: ReturnType<typeof countingPool>["sql"],
  options: AcceptorOptions,
) {
  const acceptor = createAcceptor({ sql, producer, log }, options);
  const outcomes = await Promise.all(list.map((m) => acceptor.accept(m)));
  await acceptor.settled();
  return outcomes;
}

describe("group commit of accepted messages", () => {
  it("writes concurrent accepts together, one statement per batch, with the rows the Prisma path wrote", async () => {
    const { project, list } = await messages(20);
    const { sql, counted } = countingPool();
    const before = Date.now();
    const outcomes = await acceptAll(list, sql, { maxBatchesInFlight: 1 });
    expect(outcomes.every((o) => o.ok)).toBe(true);
    // The first message finds nothing being written and goes alone; the others fill the next batch.
    expect(counted.batchSizes).toEqual([1, 19]);
    // Named per batch size: each connection plans a statement once, not at every batch.
    expect(counted.names).toEqual(["postern-accept-1", "postern-accept-19"]);

    const stored = await ctx.db.message.findMany({
      where: { projectId: project.id },
      include: { body: true, recipients: true },
    });
    expect(stored.map((m) => m.id).sort()).toEqual(list.map((m) => m.id).sort());
    for (const row of stored) {
      const sent = list.find((m) => m.id === row.id) as MessageToAccept;
      expect(row).toMatchObject({
        credentialId: (sent.client as AuthenticatedClient).credentialId,
        mailFrom: "app@example.com",
        headerMessageId: sent.headers.messageId,
        subject: sent.headers.subject,
        size: sent.bytes.length,
        status: "queued",
        attempts: 0,
        nextAttemptAt: null,
        lastError: null,
        deliveredAt: null,
        completedAt: null,
      });
      // Timestamps are UTC like Prisma's, whatever the session's time zone.
      expect(row.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1);
      expect(row.createdAt.getTime()).toBeLessThanOrEqual(Date.now() + 1);
      expect(row.updatedAt).toEqual(row.createdAt);
      expect(row.body?.createdAt).toEqual(row.createdAt);
      expect(Buffer.from(row.body?.data ?? []).equals(sent.bytes)).toBe(true);
      expect(row.recipients.map((r) => [r.address, r.status, r.code]).sort()).toEqual(
        sent.recipients.map((address) => [address, "pending", null]).sort(),
      );
      for (const r of row.recipients) expect(r.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    }

    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: project.id, action: "message.accepted" },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => (a.details as { messageId: string }).messageId)).toEqual(list.map((m) => m.id));
    expect((audit[0]?.details as { recipients: string[] } | undefined)?.recipients).toEqual(
      list[0]?.recipients,
    );
    expect(audit[3]).toMatchObject({
      actor: `smtp:${(list[3]?.client as AuthenticatedClient | undefined)?.key}`,
      ip: "192.0.2.10",
      details: {
        messageId: list[3]?.id,
        mailFrom: "app@example.com",
        recipients: list[3]?.recipients,
        size: list[3]?.bytes.length,
        headerMessageId: "<m3@example.com>",
      },
    });

    // The statement-level stats trigger counted the batch.
    const stats = await ctx.db.messageStatsHour.aggregate({
      where: { projectId: project.id, status: "queued" },
      _sum: { count: true },
    });
    expect(stats._sum.count).toBe(20);

    // One delivery job per batch: the lone first message's job has its id, the 19 others share
    // one, which each of their rows names for the sweeper.
    const [first, ...rest] = list.map((m) => m.id);
    const jobOf = new Map(stored.map((row) => [row.id, row.deliveryJobId]));
    expect(jobOf.get(first as string)).toBe(first);
    const batchJobId = jobOf.get(rest[0] as string) as string;
    expect(rest.map((id) => jobOf.get(id))).toEqual(rest.map(() => batchJobId));
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.redisKeyPrefix });
    expect((await queue.getJob(first as string))?.data).toEqual({ messageId: first, projectId: project.id });
    expect((await queue.getJob(batchJobId))?.data).toEqual({ messageIds: rest, projectId: project.id });
    expect(await queue.getJobCountByTypes("prioritized", "waiting")).toBe(2);
    await queue.close();
  });

  it("bounds a batch by messages and by bytes; a message over the byte budget is written alone", async () => {
    const small = await messages(9);
    const byCount = countingPool();
    await acceptAll(small.list, byCount.sql, { maxBatchesInFlight: 1, maxBatchMessages: 4 });
    expect(byCount.counted.batchSizes).toEqual([1, 4, 4]);

    const large = await messages(5, { size: 4_000 });
    const byBytes = countingPool();
    const outcomes = await acceptAll(large.list, byBytes.sql, {
      maxBatchesInFlight: 1,
      maxBatchBytes: 9_000,
    });
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(byBytes.counted.batchSizes).toEqual([1, 2, 2]);
    const alone = countingPool();
    await acceptAll((await messages(3, { size: 10_000 })).list, alone.sql, {
      maxBatchesInFlight: 1,
      maxBatchBytes: 9_000,
    });
    expect(alone.counted.batchSizes).toEqual([1, 1, 1]);
  });

  it("a batch with nothing in flight waits for a message another session is receiving, and takes it along", async () => {
    const { list } = await messages(3);
    const { sql, counted } = countingPool();
    // Long enough that only the announced messages can end the wait in this test.
    const acceptor = createAcceptor({ sql, producer, log }, { maxHoldMs: 60_000 });
    const second = acceptor.expect();
    const third = acceptor.expect();
    const first = acceptor.accept(list[0] as MessageToAccept);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(counted.statements).toBe(0);
    const outcomes = [first, second.accept(list[1] as MessageToAccept)];
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(counted.statements).toBe(0);
    // The last one is refused before it reaches the acceptor (too large, say): nothing to wait for.
    third.cancel();
    expect((await Promise.all(outcomes)).every((o) => o.ok)).toBe(true);
    expect(counted.batchSizes).toEqual([2]);
    await acceptor.settled();
  });

  it("does not wait when the messages waiting already fill a batch", async () => {
    const { list } = await messages(2, { size: 6_000 });
    const { sql, counted } = countingPool();
    const acceptor = createAcceptor({ sql, producer, log }, { maxHoldMs: 60_000, maxBatchBytes: 10_000 });
    acceptor.expect();
    const outcomes = await Promise.all(list.map((m) => acceptor.accept(m)));
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(counted.batchSizes).toEqual([1, 1]);
    await acceptor.settled();
  });

  it("waits no longer than maxHoldMs for a message that does not come", async () => {
    const { list } = await messages(1);
    const { sql, counted } = countingPool();
    const acceptor = createAcceptor({ sql, producer, log }, { maxHoldMs: 20 });
    acceptor.expect();
    expect(await acceptor.accept(list[0] as MessageToAccept)).toEqual({
      ok: true,
      value: { duplicateOf: undefined },
    });
    expect(counted.batchSizes).toEqual([1]);
    await acceptor.settled();
  });

  it("does not wait while a batch is being written: the one in flight is the wait", async () => {
    const { list } = await messages(2);
    const { sql, counted } = countingPool();
    const acceptor = createAcceptor({ sql, producer, log }, { maxHoldMs: 60_000 });
    const first = acceptor.accept(list[0] as MessageToAccept);
    acceptor.expect();
    // The first batch is in flight, so the second is written beside it without waiting.
    const outcomes = await Promise.all([first, acceptor.accept(list[1] as MessageToAccept)]);
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(counted.batchSizes).toEqual([1, 1]);
    await acceptor.settled();
  });

  it("a message PostgreSQL refuses fails alone: the rest of its batch is stored and answered", async () => {
    const { project, list } = await messages(5, {
      subject: (i) => (i === 3 ? "nul \u0000 byte" : `ok ${i}`),
    });
    const { sql } = countingPool();
    const outcomes = await acceptAll(list, sql, { maxBatchesInFlight: 1 });
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, true, false, true]);
    expect(outcomes[3]).toMatchObject({ ok: false, reason: "content_unstorable" });
    const stored = await ctx.db.message.findMany({ where: { projectId: project.id }, select: { id: true } });
    expect(stored.map((m) => m.id).sort()).toEqual(
      list
        .filter((_, i) => i !== 3)
        .map((m) => m.id)
        .sort(),
    );
    expect(
      await ctx.db.auditEvent.count({ where: { projectId: project.id, action: "message.accepted" } }),
    ).toBe(4);
  });

  it("answers once the batch is committed, without waiting for its delivery jobs to be added", async () => {
    const { list } = await messages(3);
    const { sql } = countingPool();
    const held: Array<() => void> = [];
    const stalled: DeliveryProducer = {
      ...producer,
      // Redis slow to answer: no batch's jobs are added until released.
      enqueuePlanned: () => new Promise<void>((resolve) => held.push(resolve)),
    };
    const acceptor = createAcceptor({ sql, producer: stalled, log });
    const outcomes = await Promise.all(list.map((m) => acceptor.accept(m)));
    expect(outcomes.every((o) => o.ok)).toBe(true);
    expect(await ctx.db.message.count({ where: { id: { in: list.map((m) => m.id) } } })).toBe(3);
    let settled = false;
    const settling = acceptor.settled().then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(settled).toBe(false);
    for (const release of held) release();
    await settling;
  });

  it("a batch that cannot be written answers every message in it store_unavailable and enqueues nothing", async () => {
    const { list } = await messages(6);
    const dead = new pg.Pool({
      connectionString: `postgresql://postern@127.0.0.1:${await freePort()}/postern`,
      connectionTimeoutMillis: 2_000,
    });
    dead.on("error", () => {});
    const outcomes = await acceptAll(list, dead, { maxBatchesInFlight: 1 });
    await dead.end();
    expect(outcomes.every((o) => !o.ok && o.reason === "store_unavailable")).toBe(true);
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.redisKeyPrefix });
    expect(await Promise.all(list.map((m) => queue.getJob(m.id)))).toEqual(list.map(() => undefined));
    await queue.close();
  });
});
