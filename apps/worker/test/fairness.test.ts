import { createHash, randomUUID } from "node:crypto";
import type { Database } from "@postern/db";
import { createProjectFixture, createTestContext, SmtpSink, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor, runWorker } from "./running";
import { waitForStatus } from "./wait";

let ctx: TestContext;
let sink: SmtpSink;
beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_CONCURRENCY: "20", DELIVERY_PROJECT_CONCURRENCY: "5" });
  sink = await SmtpSink.start();
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

/** `count` queued messages as the accept step stores them, in three statements instead of 3×count. */
async function queuedMessages(db: Database, projectId: string, count: number, tag: string) {
  const messages = Array.from({ length: count }, (_, i) => {
    const raw = Buffer.from(`Subject: ${tag} ${i}\r\nX-Project: ${tag}\r\n\r\nbody ${i}\r\n`);
    return { id: randomUUID(), raw };
  });
  await db.message.createMany({
    data: messages.map(({ id, raw }) => ({
      id,
      projectId,
      mailFrom: `${tag}@example.com`,
      size: raw.length,
      sha256: createHash("sha256").update(raw).digest("hex"),
    })),
  });
  await db.messageBody.createMany({
    data: messages.map(({ id, raw }) => ({ messageId: id, data: new Uint8Array(raw) })),
  });
  await db.messageRecipient.createMany({
    data: messages.map(({ id }) => ({ messageId: id, address: `rcpt@${tag}.example.net` })),
  });
  return messages.map(({ id }) => ({ id, projectId }));
}

it("delivers another project's message before a 2,000-message backlog is half done", async () => {
  const a = await createProjectFixture(ctx.db, ctx.config, { name: "A", upstream: sink.url });
  const b = await createProjectFixture(ctx.db, ctx.config, { name: "B", upstream: sink.url });
  const backlog = await queuedMessages(ctx.db, a.project.id, 2_000, "a");
  const [late] = await queuedMessages(ctx.db, b.project.id, 1, "b");
  const producer = producerFor(ctx);
  await producer.enqueueMany(backlog);
  await producer.enqueue(late ?? { id: "", projectId: "" });

  const started = Date.now();
  const worker = await runWorker(ctx);
  try {
    await waitForStatus(ctx.db, late?.id ?? "", "delivered", 60_000);
    const aDeliveredBefore = sink.messages.findIndex((m) => m.mailFrom === "b@example.com");
    expect(aDeliveredBefore).toBeGreaterThanOrEqual(0);
    expect(aDeliveredBefore).toBeLessThan(1_000);

    // The rest of the backlog still gets through (and gives a rough throughput figure).
    await sink.waitFor(2_001, 120_000);
    const seconds = (Date.now() - started) / 1000;
    console.info(
      `fairness: B delivered after ${aDeliveredBefore} of A's 2,000; 2,001 messages in ${seconds.toFixed(1)} s (${Math.round(2_001 / seconds)}/s)`,
    );
  } finally {
    await worker.stop();
    await producer.close();
  }
}, 180_000);
