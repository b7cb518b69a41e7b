import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor, runWorker } from "./running";
import { waitForStatus } from "./wait";

let ctx: TestContext;
let sink: SmtpSink;
beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1", DELIVERY_MAX_ATTEMPTS: "2" });
  sink = await SmtpSink.start();
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

it("fails a message still deferred after DELIVERY_MAX_ATTEMPTS, with the last reply", async () => {
  sink.dataReply = () => ({ code: 451, message: "4.3.0 still busy" });
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  const message = await createQueuedMessageFixture(ctx.db, project);
  const worker = await runWorker(ctx);
  const producer = producerFor(ctx);
  try {
    await producer.enqueue(message);
    const failed = await waitForStatus(ctx.db, message.id, "failed");
    expect(failed.attempts).toBe(2);
    expect(failed.lastError).toContain("still busy");
    const attempts = await ctx.db.deliveryAttempt.findMany({
      where: { messageId: message.id },
      orderBy: { number: "asc" },
    });
    expect(attempts.map((a) => [a.number, a.outcome, a.code])).toEqual([
      [1, "deferred", 451],
      [2, "failed", 451],
    ]);
    const [recipient] = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
    expect(recipient).toMatchObject({ status: "failed", code: 451, enhancedCode: "4.3.0" });
    expect(
      await ctx.db.auditEvent.count({ where: { projectId: project.id, action: "message.failed" } }),
    ).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(2);
  } finally {
    await worker.stop();
    await producer.close();
  }
});
