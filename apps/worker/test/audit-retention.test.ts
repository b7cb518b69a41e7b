import { sqlPoolOf } from "@postern/db";
import { createDeliveryQueue } from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { sweep } from "@postern/worker";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor } from "./running";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ AUDIT_RETENTION_DAYS: "90" });
});
afterAll(() => ctx?.close());

const dayMs = 86_400_000;

it("deletes audit events older than AUDIT_RETENTION_DAYS in bounded statements, and keeps newer ones", async () => {
  const now = new Date();
  const daysAgo = (days: number) => new Date(now.getTime() - days * dayMs);
  const event = (createdAt: Date, action: string) => ({ actor: "system", action, createdAt });
  await ctx.db.auditEvent.createMany({
    data: [
      // Committed late: a newer event among the oldest ids must be kept, and must not stop the pruning.
      event(daysAgo(1), "kept.late"),
      ...Array.from({ length: 10 }, () => event(daysAgo(120), "pruned")),
      event(daysAgo(90.01), "pruned"),
      event(daysAgo(89.99), "kept"),
      event(daysAgo(1), "kept"),
    ],
  });

  const pool = sqlPoolOf(ctx.db);
  const pruneStatements: number[] = [];
  const sql = {
    query: (async (...args: Parameters<typeof pool.query>) => {
      const result = await (pool.query as (...a: unknown[]) => Promise<{ rowCount: number | null }>)(...args);
      const statement = args[0] as { name?: string } | string;
      if (typeof statement === "object" && statement.name === "postern-audit-prune") {
        pruneStatements.push(result.rowCount ?? 0);
      }
      return result;
    }) as typeof pool.query,
  };
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  const producer = producerFor(ctx);
  try {
    const result = await sweep(
      { config: ctx.config, sql, redis: ctx.redis, queue, producer, pruneBatchSize: 3 },
      now,
    );
    expect(result.prunedAuditEvents).toBe(11);
    // 11 rows, the oldest 3 ids a statement: the late event, kept, takes one of the 3 places each
    // time; the last statement finds none.
    expect(pruneStatements).toEqual([2, 2, 2, 2, 2, 1, 0]);
    const left = await ctx.db.auditEvent.findMany({ orderBy: { id: "asc" }, select: { action: true } });
    expect(left.map((row) => row.action)).toEqual(["kept.late", "kept", "kept"]);

    // Nothing past the retention any more: one statement, nothing deleted.
    pruneStatements.length = 0;
    const again = await sweep(
      { config: ctx.config, sql, redis: ctx.redis, queue, producer, pruneBatchSize: 3 },
      now,
    );
    expect(again.prunedAuditEvents).toBe(0);
    expect(pruneStatements).toEqual([0]);
  } finally {
    await queue.close();
    await producer.close();
  }
});

it("keeps every audit event when AUDIT_RETENTION_DAYS is 0", async () => {
  await ctx.db.auditEvent.create({ data: { actor: "system", action: "ancient", createdAt: new Date(0) } });
  const queue = createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix);
  const producer = producerFor(ctx);
  try {
    const config = { ...ctx.config, auditRetentionDays: 0 };
    const result = await sweep({ config, sql: sqlPoolOf(ctx.db), redis: ctx.redis, queue, producer });
    expect(result.prunedAuditEvents).toBe(0);
    expect(await ctx.db.auditEvent.count({ where: { action: "ancient" } })).toBe(1);
  } finally {
    await queue.close();
    await producer.close();
  }
});
