import { sqlPoolOf } from "@postern/db";
import { createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor, runWorker } from "./running";
import { until, waitForStatus } from "./wait";

let ctx: TestContext;
let sink: SmtpSink;
beforeAll(async () => {
  // Four jobs at once, but one connection per project.
  ctx = await createTestContext({ DELIVERY_CONCURRENCY: "4", DELIVERY_PROJECT_CONCURRENCY: "1" });
  sink = await SmtpSink.start();
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

it("loads a message's body only once one of its project's connections is free", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  const messages = await Promise.all(
    ["one", "two"].map((text) =>
      createQueuedMessageFixture(ctx.db, project, { raw: `Subject: ${text}\r\n\r\n${text}\r\n` }),
    ),
  );
  // The upstream holds its answer to DATA, so the first delivery keeps the only connection.
  let transactions = 0;
  sink.rcptReply = () => {
    transactions += 1;
    return undefined;
  };
  sink.dataDelayMs = 1500;

  const metrics = createMetricsRegistry();
  const worker = await runWorker(ctx, { metrics });
  const producer = producerFor(ctx);
  try {
    await producer.enqueueMany(messages);
    const waiting = async () =>
      (await metrics.getSingleMetricAsString("postern_delivery_waiting_for_connection")).match(
        /^postern_delivery_waiting_for_connection (\d+)$/m,
      )?.[1];
    // One message is at the upstream (its body was read before its RCPT), the other waits.
    await until(async () => transactions === 1 && (await waiting()) === "1", "one delivery in flight");

    // Both bodies change in PostgreSQL now: only the waiting one has not been read yet.
    for (const message of messages)
      await ctx.db.messageBody.update({
        where: { messageId: message.id },
        data: { data: new Uint8Array(Buffer.from("Subject: changed\r\n\r\nchanged\r\n")) },
      });

    for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
    const subjects = sink.messages.map((m) => m.raw.toString().split("\r\n")[0]).sort();
    expect(subjects).toEqual(["Subject: changed", expect.stringMatching(/^Subject: (one|two)$/)]);
    expect(await waiting()).toBe("0");
  } finally {
    sink.rcptReply = () => undefined;
    sink.dataDelayMs = 0;
    await worker.stop();
    await producer.close();
  }
});

it("lets the next message use the connection while the last attempt is being recorded", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
  const [first, second] = await Promise.all(
    ["first", "second"].map((text) =>
      createQueuedMessageFixture(ctx.db, project, { raw: `Subject: ${text}\r\n\r\n${text}\r\n` }),
    ),
  );
  if (!first || !second) throw new Error("fixtures");
  // A transaction holding the first message's row keeps its attempt's record from committing.
  const holder = await sqlPoolOf(ctx.db).connect();
  await holder.query("BEGIN");
  await holder.query(`SELECT 1 FROM "Message" WHERE "id" = $1 FOR UPDATE`, [first.id]);

  const worker = await runWorker(ctx);
  const producer = producerFor(ctx);
  const arrived = (id: string) => sink.messages.some((m) => m.raw.toString().includes(`Subject: ${id}`));
  try {
    await producer.enqueueMany([first]);
    await until(() => arrived("first"), "the first message at the upstream");
    await producer.enqueueMany([second]);
    // The project's only connection is free again although the first attempt is not recorded.
    await until(() => arrived("second"), "the second message at the upstream");
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: first.id } })).status).toBe("queued");

    await holder.query("ROLLBACK");
    for (const message of [first, second]) await waitForStatus(ctx.db, message.id, "delivered");
  } finally {
    await holder.query("ROLLBACK").catch(() => {});
    holder.release();
    await worker.stop();
    await producer.close();
  }
});
