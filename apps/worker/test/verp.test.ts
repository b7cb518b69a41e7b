import { createProjectService } from "@postern/projects";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { createReturnPaths } from "@postern/verp";
import { type RunningWorker, startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitForStatus } from "./wait";

/**
 * The envelope sender at the upstream (docs/bounces.md): a project with `returnPath: "verp"`
 * sends with `bounce+<token>@BOUNCE_DOMAIN`, the token naming the message; a project with
 * `sender` (the default) sends with its sender's address, unchanged.
 */

const bounceDomain = "bounces.example.com";
let ctx: TestContext;
let worker: RunningWorker;
let producer: DeliveryProducer;
let upstream: SmtpSink;

beforeAll(async () => {
  upstream = await SmtpSink.start();
  ctx = await createTestContext({ BOUNCE_DOMAIN: bounceDomain });
  worker = await startWorker({
    ...ctx,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});
afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  await upstream?.stop();
  await ctx?.close();
});

async function project(returnPath: "sender" | "verp") {
  const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
  if (returnPath === "verp") {
    // As an operator sets it: PATCH /admin/projects/:id and `postern project update` share this.
    const service = createProjectService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
    expect((await service.update(project.id, { returnPath: "verp" }, { actor: "test" })).ok).toBe(true);
  }
  return project;
}

async function deliver(fromProject: Awaited<ReturnType<typeof project>>, from: string, to: string[]) {
  const message = await createQueuedMessageFixture(ctx.db, fromProject, { from, to });
  await producer.enqueue(message);
  await waitForStatus(ctx.db, message.id, "delivered");
  const received = upstream.messages.filter((m) => m.raw.includes(Buffer.from(`To: <${to[0]}>`)));
  expect(received).toHaveLength(1);
  return { message, received: received[0] as (typeof received)[number] };
}

describe("the envelope sender towards the upstream", () => {
  it("is a VERP return path naming the message for a verp project, all its recipients in one envelope", async () => {
    const verp = await project("verp");
    const { message, received } = await deliver(verp, "app@example.com", [
      "a@verp.example",
      "b@verp.example",
    ]);
    expect(received.mailFrom).toMatch(/^bounce\+[a-z2-7]{45}@bounces\.example\.com$/);
    expect(received.rcptTo).toEqual(["a@verp.example", "b@verp.example"]);
    const paths = createReturnPaths({ encryptionKey: ctx.config.encryptionKey, bounceDomain });
    expect(paths.read(received.mailFrom)).toEqual({ ok: true, messageId: message.id });
    // The header From is the sender's: only the envelope changes.
    expect(received.raw.toString()).toContain("From: <app@example.com>");
  });

  it("is the sender's own address for a project with the default `sender`", async () => {
    const plain = await project("sender");
    const { received } = await deliver(plain, "app@example.com", ["c@plain.example"]);
    expect(received.mailFrom).toBe("app@example.com");
  });

  it("stays the null sender for a message sent with <>: nothing may answer it", async () => {
    const verp = await project("verp");
    const { received } = await deliver(verp, "", ["d@null.example"]);
    expect(received.mailFrom).toBe("");
  });
});
