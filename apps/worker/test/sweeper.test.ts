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
  ctx = await createTestContext({ BODY_RETENTION_DAYS: "7" });
});
afterAll(() => ctx?.close());

function sweeperDeps() {
  return {
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    queue: createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix),
    producer: producerFor(ctx),
  };
}

it("prunes old bodies of delivered and failed messages only, never of pending ones", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const old = new Date(Date.now() - 30 * 86_400_000);
  const byStatus = {} as Record<"queued" | "deferred" | "delivered" | "failed" | "recentDelivered", string>;
  for (const status of ["queued", "deferred", "delivered", "failed", "recentDelivered"] as const) {
    const message = await createQueuedMessageFixture(ctx.db, project);
    byStatus[status] = message.id;
    const final = status === "recentDelivered" ? "delivered" : status;
    await ctx.db.message.update({
      where: { id: message.id },
      // A deferred message whose retry is far away: the sweep must not touch it either way.
      data: { status: final, nextAttemptAt: status === "deferred" ? new Date(Date.now() + 3_600_000) : null },
    });
    if (status !== "recentDelivered") {
      await ctx.db.messageBody.update({ where: { messageId: message.id }, data: { createdAt: old } });
    }
  }
  const deps = sweeperDeps();
  const result = await sweep(deps);
  expect(result.prunedBodies).toBe(2);
  const bodies = await ctx.db.messageBody.findMany({ select: { messageId: true } });
  const kept = new Set(bodies.map((b) => b.messageId));
  expect(kept.has(byStatus.queued)).toBe(true);
  expect(kept.has(byStatus.deferred)).toBe(true);
  expect(kept.has(byStatus.recentDelivered)).toBe(true);
  expect(kept.has(byStatus.delivered)).toBe(false);
  expect(kept.has(byStatus.failed)).toBe(false);
  // Metadata stays: only the body goes.
  expect(await ctx.db.message.count({ where: { projectId: project.id } })).toBe(5);
  // The queued message had no job: the sweep gave it one; the deferred one is not due yet.
  expect(result.requeued).toBe(1);
  expect(await deps.queue.getJob(byStatus.queued)).toBeDefined();
  expect(await deps.queue.getJob(byStatus.deferred)).toBeUndefined();
  // A second sweep finds the job alive and adds nothing.
  expect((await sweep(deps)).requeued).toBe(0);
  await deps.queue.close();
  await deps.producer.close();
});
