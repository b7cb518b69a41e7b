import { sqlPoolOf } from "@postern/db";
import { createDeliveryQueue } from "@postern/queue";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import { sweep } from "@postern/worker";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor } from "./running";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ EVENT_RETENTION_DAYS: "90" });
});
afterAll(() => ctx?.close());

const dayMs = 86_400_000;

/** The sweep with the pool's statements counted: rows deleted by each event-pruning statement. */
async function sweepCountingPrunes(config: typeof ctx.config, now: Date, pruneBatchSize?: number) {
  const pool = sqlPoolOf(ctx.db);
  const pruneStatements: number[] = [];
  const sql = {
    query: (async (...args: Parameters<typeof pool.query>) => {
      const result = await (pool.query as (...a: unknown[]) => Promise<{ rowCount: number | null }>)(...args);
      const statement = args[0] as { name?: string } | string;
      if (typeof statement === "object" && statement.name === "postern-message-event-prune") {
        pruneStatements.push(result.rowCount ?? 0);
      }
      return result;
    }) as typeof pool.query,
  };
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  const producer = producerFor(ctx);
  try {
    const result = await sweep({ config, sql, redis: ctx.redis, queue, producer, pruneBatchSize }, now);
    return { result, pruneStatements };
  } finally {
    await queue.close();
    await producer.close();
  }
}

it("deletes message events older than EVENT_RETENTION_DAYS in bounded statements, keeps newer ones and the messages", async () => {
  const now = new Date();
  const daysAgo = (days: number) => new Date(now.getTime() - days * dayMs);
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const old = await createQueuedMessageFixture(ctx.db, project);
  const recent = await createQueuedMessageFixture(ctx.db, project);
  const event = (messageId: string, createdAt: Date, type: string) => ({
    projectId: project.id,
    messageId,
    type,
    createdAt,
  });
  await ctx.db.messageEvent.createMany({
    data: [
      // Committed late: a newer event among the oldest ids must be kept, and must not stop the pruning.
      event(recent.id, daysAgo(1), "message.retried"),
      ...Array.from({ length: 10 }, () => event(old.id, daysAgo(120), "message.deferred")),
      event(old.id, daysAgo(90.01), "message.failed"),
      event(recent.id, daysAgo(89.99), "message.accepted"),
      event(recent.id, daysAgo(1), "message.delivered"),
    ],
  });

  const { result, pruneStatements } = await sweepCountingPrunes(ctx.config, now, 3);
  expect(result.prunedMessageEvents).toBe(11);
  // 11 rows, the oldest 3 ids a statement: the late event, kept, takes one of the 3 places each
  // time; the last statement finds none.
  expect(pruneStatements).toEqual([2, 2, 2, 2, 2, 1, 0]);
  const left = await ctx.db.messageEvent.findMany({ orderBy: { id: "asc" }, select: { type: true } });
  expect(left.map((row) => row.type)).toEqual(["message.retried", "message.accepted", "message.delivered"]);
  // The messages stay, the one without events left too.
  expect(await ctx.db.message.count({ where: { id: { in: [old.id, recent.id] } } })).toBe(2);

  // Nothing past the retention any more: one statement, nothing deleted.
  const again = await sweepCountingPrunes(ctx.config, now, 3);
  expect(again.result.prunedMessageEvents).toBe(0);
  expect(again.pruneStatements).toEqual([0]);
});

it("keeps every message event when EVENT_RETENTION_DAYS is 0", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const message = await createQueuedMessageFixture(ctx.db, project);
  await ctx.db.messageEvent.create({
    data: { projectId: project.id, messageId: message.id, type: "message.accepted", createdAt: new Date(0) },
  });
  const { result, pruneStatements } = await sweepCountingPrunes(
    { ...ctx.config, eventRetentionDays: 0 },
    new Date(),
  );
  expect(result.prunedMessageEvents).toBe(0);
  expect(pruneStatements).toEqual([]);
  expect(await ctx.db.messageEvent.count({ where: { messageId: message.id } })).toBe(1);
});
