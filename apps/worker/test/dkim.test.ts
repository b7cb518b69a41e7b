import { Resolver } from "node:dns/promises";
import { createDomainService, type DomainView } from "@postern/dkim";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
  TestDnsServer,
} from "@postern/testkit";
import { dkimVerify } from "mailauth";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runWorker } from "./running";
import { waitForStatus } from "./wait";

let dns: TestDnsServer;
let ctx: TestContext;
let producer: DeliveryProducer;
let worker: Awaited<ReturnType<typeof runWorker>>;
let sink: SmtpSink;
/** The independent verifier's DNS: node's own resolver at the test server, not Postern's look-up. */
let resolver: Resolver;

beforeAll(async () => {
  dns = await TestDnsServer.start();
  ctx = await createTestContext({ DNS_SERVERS: dns.address, DELIVERY_BACKOFF: "1,1" });
  worker = await runWorker(ctx);
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  sink = await SmtpSink.start();
  resolver = new Resolver();
  resolver.setServers([dns.address]);
});
afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  await sink?.stop();
  await ctx?.close();
  await dns?.stop();
});

// As the API and CLI use it. A change publishes an invalidation and the worker drops the project's
// keys: Redis writes a published message to its subscribers before it answers the PUBLISH, so the
// worker has it before the test's next message is even enqueued.
const domains = () => createDomainService({ db: ctx.db, redis: ctx.redis, config: ctx.config });

const by = { actor: "test" };

/** Publishes every record the domain asks for, as its owner would. */
function publish(domain: DomainView) {
  for (const record of domain.records) dns.setTxt(record.name, [record.value]);
}

async function send(projectId: string, from: string, body = "Hello, signed world.\r\n") {
  const raw = Buffer.from(
    [
      `From: Sender <${from}>`,
      "To: <rcpt@example.net>",
      "Subject: DKIM test",
      `Message-ID: <${Math.random().toString(36).slice(2)}@postern.test>`,
      "Date: Mon, 07 Dec 2026 19:00:00 +0000",
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=utf-8",
      "",
      body,
    ].join("\r\n"),
  );
  const project = { id: projectId };
  const message = await createQueuedMessageFixture(ctx.db, project as never, {
    from,
    to: ["rcpt@example.net"],
    raw,
  });
  await producer.enqueue(message);
  await waitForStatus(ctx.db, message.id, "delivered");
  const received = sink.messages.find((m) => m.raw.includes(raw.subarray(raw.indexOf("Message-ID"))));
  if (!received) throw new Error("message not at the sink");
  return { message, raw, received: received.raw };
}

async function verifyDkim(raw: Buffer) {
  const result = await dkimVerify(raw, { resolver: (name, type) => resolver.resolve(name, type as "TXT") });
  return result.results;
}

describe("DKIM signing at delivery", () => {
  for (const algorithm of ["rsa", "ed25519"] as const) {
    it(`signs with the domain's active ${algorithm} key; an independent verifier accepts it, and not the altered body`, async () => {
      const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
      const name = `${algorithm}.signed.example`;
      const created = await domains().create(project.id, { domain: name, algorithm }, by);
      if (!created.ok) throw new Error(created.reason);
      publish(created.value);
      const verified = await domains().verify(project.id, created.value.id, by);
      expect(verified?.activated).toEqual(["pst1"]);

      const { message, raw, received } = await send(project.id, `news@${name}`);
      expect(received.subarray(0, 16).toString()).toBe("DKIM-Signature: ");
      const [result] = await verifyDkim(received);
      expect(result?.status.result).toBe("pass");
      expect(result?.signingDomain).toBe(name);
      expect(result?.selector).toBe("pst1");
      expect(received.toString()).toContain(`a=${algorithm}-sha256;`);
      expect(received.toString()).toMatch(/c=relaxed\/relaxed/);

      // The stored bytes stay as received (CONTRACT §7: the raw download has no signature).
      const stored = await ctx.db.messageBody.findUniqueOrThrow({ where: { messageId: message.id } });
      expect(Buffer.from(stored.data).equals(raw)).toBe(true);

      const altered = Buffer.from(
        received.toString().replace("Hello, signed world.", "Hello, forged world."),
      );
      const [tampered] = await verifyDkim(altered);
      expect(tampered?.status.result).not.toBe("pass");
      expect(tampered?.status.comment).toMatch(/body hash/);
    });
  }

  it("leaves a message unsigned when its From domain has no active key", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    // A domain whose record was never published: its key stays pending.
    const pending = await domains().create(project.id, { domain: "pending.example" }, by);
    expect(pending.ok).toBe(true);
    const unsigned = await send(project.id, "a@pending.example");
    expect(unsigned.received.equals(unsigned.raw)).toBe(true);
    const other = await send(project.id, "a@unknown.example");
    expect(other.received.equals(other.raw)).toBe(true);
  });

  it("signs with a rotated key once it is verified, and with the old key until then", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const created = await domains().create(project.id, { domain: "rotate.example" }, by);
    if (!created.ok) throw new Error(created.reason);
    publish(created.value);
    await domains().verify(project.id, created.value.id, by);
    const rotated = await domains().rotate(project.id, created.value.id, { algorithm: "ed25519" }, by);
    if (!rotated.ok) throw new Error(rotated.reason);
    expect(rotated.value.keys.map((k) => [k.selector, k.status])).toEqual([
      ["pst1", "active"],
      ["pst2", "pending"],
    ]);
    const before = await send(project.id, "a@rotate.example");
    expect((await verifyDkim(before.received))[0]).toMatchObject({
      selector: "pst1",
      status: { result: "pass" },
    });

    publish(rotated.value);
    const verified = await domains().verify(project.id, created.value.id, by);
    expect(verified?.activated).toEqual(["pst2"]);
    expect(verified?.domain.keys.map((k) => k.selector)).toEqual(["pst2"]);
    const after = await send(project.id, "b@rotate.example");
    expect((await verifyDkim(after.received))[0]).toMatchObject({
      selector: "pst2",
      status: { result: "pass" },
    });
  });
});
