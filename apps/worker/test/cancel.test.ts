import { changeMessageStatus } from "@postern/messages";
import { createDeliveryProducer, type DeliveryProducer, deliveryQueueName } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { startWorker } from "@postern/worker";
import { Queue } from "bullmq";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { until, waitForStatus } from "./wait";

let ctx: TestContext;
let producer: DeliveryProducer;
let queue: Queue;
let worker: Awaited<ReturnType<typeof startWorker>>;
const sinks: SmtpSink[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1" });
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
});
afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  await queue?.close();
  for (const sink of sinks) await sink.stop();
  await ctx?.close();
});

async function sink() {
  const started = await SmtpSink.start();
  sinks.push(started);
  return started;
}

const cancel = (projectId: string, id: string) =>
  changeMessageStatus(ctx.db, { projectId, id, action: "cancel", actor: "test", ip: null });

async function eventTypes(messageId: string): Promise<string[]> {
  const events = await ctx.db.messageEvent.findMany({ where: { messageId }, orderBy: { id: "asc" } });
  return events.map((e) => e.type);
}

/** Completed jobs are removed (`removeOnComplete`): a job of the message's id is done once gone. */
const jobDone = (id: string, what: string) =>
  until(async () => (await queue.getJobState(id)) === "unknown", what);

/** A sink that holds every DATA until `release`, and says when bytes arrived. */
function holdAtData(upstream: SmtpSink) {
  let arrived: () => void = () => {};
  let release: () => void = () => {};
  const onWire = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  upstream.beforeDataReply = async () => {
    arrived();
    await released;
  };
  return { onWire, release };
}

describe("a cancelled message", () => {
  it("is never delivered: its job ends without sending its bytes", async () => {
    const upstream = await sink();
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    expect(await cancel(project.id, message.id)).toEqual({ ok: true });
    await producer.enqueue(message);
    await jobDone(message.id, "the job to complete");
    expect(upstream.messages).toHaveLength(0);
    const row = await ctx.db.message.findUniqueOrThrow({ where: { id: message.id } });
    expect(row.status).toBe("cancelled");
    expect(row.attempts).toBe(0);
    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(0);
    expect(await eventTypes(message.id)).toEqual(["message.cancelled"]);
  });

  it("cancelled while deferred, is not tried again when its backoff runs out", async () => {
    const upstream = await sink();
    upstream.dataReply = () => ({ code: 451, message: "4.3.0 try later" });
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(message);
    await waitForStatus(ctx.db, message.id, "deferred");
    expect(await cancel(project.id, message.id)).toEqual({ ok: true });
    upstream.dataReply = () => undefined;
    // The delayed retry job (1 s backoff) runs, finds it cancelled and completes.
    await jobDone(message.id, "the retry job to complete");
    expect(upstream.messages).toHaveLength(0);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: message.id } })).status).toBe("cancelled");
    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(1);
    expect(await eventTypes(message.id)).toEqual(["message.deferred", "message.cancelled"]);
  });
});

describe("cancel racing a delivery on the wire", () => {
  it("the upstream accepts after the cancel: recorded as delivered, with the cancelled event before it", async () => {
    const upstream = await sink();
    const held = holdAtData(upstream);
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(message);
    await held.onWire;
    // The bytes are at the upstream, its answer pending: the cancel commits meanwhile.
    expect(await cancel(project.id, message.id)).toEqual({ ok: true });
    held.release();
    const row = await waitForStatus(ctx.db, message.id, "delivered");
    expect(row.deliveredAt).not.toBeNull();
    expect(upstream.messages).toHaveLength(1);
    expect(await eventTypes(message.id)).toEqual(["message.cancelled", "message.delivered"]);
    const attempts = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempts.map((a) => a.outcome)).toEqual(["delivered"]);
  });

  it("the upstream refuses with 5xx after the cancel: recorded as failed", async () => {
    const upstream = await sink();
    const held = holdAtData(upstream);
    upstream.dataReply = () => ({ code: 550, message: "5.7.1 no" });
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(message);
    await held.onWire;
    expect(await cancel(project.id, message.id)).toEqual({ ok: true });
    held.release();
    await waitForStatus(ctx.db, message.id, "failed");
    expect(await eventTypes(message.id)).toEqual(["message.cancelled", "message.failed"]);
  });

  it("the upstream defers after the cancel: nothing recorded, it stays cancelled and is never tried again", async () => {
    const upstream = await sink();
    const held = holdAtData(upstream);
    upstream.dataReply = () => ({ code: 451, message: "4.3.0 later" });
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const message = await createQueuedMessageFixture(ctx.db, project);
    await producer.enqueue(message);
    await held.onWire;
    expect(await cancel(project.id, message.id)).toEqual({ ok: true });
    held.release();
    await jobDone(message.id, "the job to complete");
    const row = await ctx.db.message.findUniqueOrThrow({ where: { id: message.id } });
    expect(row.status).toBe("cancelled");
    expect(row.nextAttemptAt).toBeNull();
    expect(await ctx.db.deliveryAttempt.count({ where: { messageId: message.id } })).toBe(0);
    expect(await eventTypes(message.id)).toEqual(["message.cancelled"]);
  });
});
