import { randomUUID } from "node:crypto";
import { sqlPoolOf } from "@postern/db";
import { createDeliveryQueue } from "@postern/queue";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { sweep } from "@postern/worker";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor } from "./running";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

it("the sweep deletes duplicate-suppression fingerprints whose window has ended, in bounded statements, and keeps live ones", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const now = new Date();
  const fingerprint = (expiresAt: Date, note: string) => ({
    projectId: project.id,
    fingerprint: `${note}-${randomUUID()}`,
    messageId: randomUUID(),
    createdAt: new Date(expiresAt.getTime() - 60_000),
    expiresAt,
  });
  await ctx.db.messageFingerprint.createMany({
    data: [
      ...Array.from({ length: 7 }, () => fingerprint(new Date(now.getTime() - 1000), "expired")),
      fingerprint(now, "expired"),
      fingerprint(new Date(now.getTime() + 1000), "live"),
      fingerprint(new Date(now.getTime() + 3_600_000), "live"),
    ],
  });

  const pool = sqlPoolOf(ctx.db);
  const pruneStatements: number[] = [];
  const sql = {
    query: (async (...args: Parameters<typeof pool.query>) => {
      const result = await (pool.query as (...a: unknown[]) => Promise<{ rowCount: number | null }>)(...args);
      const statement = args[0] as { name?: string } | string;
      if (typeof statement === "object" && statement.name === "postern-fingerprint-prune")
        pruneStatements.push(result.rowCount ?? 0);
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
    expect(result.prunedFingerprints).toBe(8);
    expect(pruneStatements).toEqual([3, 3, 2, 0]);
    const left = await ctx.db.messageFingerprint.findMany({ select: { fingerprint: true } });
    expect(left.map((row) => row.fingerprint.split("-")[0])).toEqual(["live", "live"]);
  } finally {
    await queue.close();
    await producer.close();
  }
});
