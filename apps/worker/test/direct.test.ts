import type { AddressInfo } from "node:net";
import { createRouteService, type RoutesInput } from "@postern/projects";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import dns2 from "dns2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitForStatus } from "./wait";

/**
 * Direct delivery to MX hosts (docs/routing.md): a DNS server on a loopback port (dns2) serves
 * MX, A and null MX records; SMTP sinks on 127.0.0.2 and 127.0.0.3 stand in for MX hosts on one
 * port (DIRECT_SMTP_PORT); 127.0.0.5 has nothing listening (a dead MX host).
 */

const { Packet } = dns2;
type Answer = { type: number; ttl: number; address?: string; exchange?: string; priority?: number };
const zone: Record<string, Answer[]> = {
  "MX mx.example": [
    { type: Packet.TYPE.MX, ttl: 300, exchange: "backup.mx.example", priority: 20 },
    { type: Packet.TYPE.MX, ttl: 300, exchange: "primary.mx.example", priority: 10 },
  ],
  "A primary.mx.example": [{ type: Packet.TYPE.A, ttl: 300, address: "127.0.0.2" }],
  "A backup.mx.example": [{ type: Packet.TYPE.A, ttl: 300, address: "127.0.0.3" }],
  "MX failover.example": [
    { type: Packet.TYPE.MX, ttl: 300, exchange: "dead.failover.example", priority: 5 },
    { type: Packet.TYPE.MX, ttl: 300, exchange: "alive.failover.example", priority: 10 },
  ],
  "A dead.failover.example": [{ type: Packet.TYPE.A, ttl: 300, address: "127.0.0.5" }],
  "A alive.failover.example": [{ type: Packet.TYPE.A, ttl: 300, address: "127.0.0.3" }],
  "MX nullmx.example": [{ type: Packet.TYPE.MX, ttl: 300, exchange: "", priority: 0 }],
  // No MX: the implicit MX is the domain's own address.
  "A implicit.example": [{ type: Packet.TYPE.A, ttl: 300, address: "127.0.0.2" }],
  "MX short.example": [{ type: Packet.TYPE.MX, ttl: 1, exchange: "mx.short.example", priority: 10 }],
  "A mx.short.example": [{ type: Packet.TYPE.A, ttl: 1, address: "127.0.0.2" }],
  "MX dead.example": [{ type: Packet.TYPE.MX, ttl: 300, exchange: "dead.failover.example", priority: 10 }],
};
/** Questions asked, `TYPE name`, in order. */
const queries: string[] = [];

let dnsServer: ReturnType<typeof dns2.createUDPServer>;
let ctx: TestContext;
let worker: RunningWorker;
let producer: DeliveryProducer;
let metrics: Registry;
let primary: SmtpSink;
let backup: SmtpSink;
let relay: SmtpSink;

beforeAll(async () => {
  dnsServer = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    if (question) {
      const key = `${Packet.typeName(question.type)} ${question.name.toLowerCase()}`;
      queries.push(key);
      for (const answer of zone[key] ?? [])
        response.answers.push({ name: question.name, class: Packet.CLASS.IN, ...answer } as never);
      const known = Object.keys(zone).some((k) => k.endsWith(` ${question.name.toLowerCase()}`));
      if (!known) response.header.rcode = Packet.RCODE.NXDOMAIN;
    }
    send(response);
  });
  await new Promise<void>((resolve) => dnsServer.bind(0, "127.0.0.1", () => resolve()));
  const dnsPort = (dnsServer.address() as AddressInfo).port;
  primary = await SmtpSink.start({ host: "127.0.0.2" });
  backup = await SmtpSink.start({ host: "127.0.0.3", port: primary.port });
  relay = await SmtpSink.start();
  ctx = await createTestContext({
    DELIVERY_BACKOFF: "1,1",
    DNS_SERVERS: `127.0.0.1:${dnsPort}`,
    DIRECT_SMTP_PORT: String(primary.port),
    SMTP_HOSTNAME: "relay.postern.test",
  });
  metrics = createMetricsRegistry();
  worker = await startWorker({ ...ctx, log: createLogger({ level: "silent" }), metrics });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});

afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  for (const sink of [primary, backup, relay]) await sink?.stop();
  dnsServer?.close();
  await ctx?.close();
});

async function routedProject(routes: RoutesInput["routes"]) {
  const fixture = await createProjectFixture(ctx.db, ctx.config, { upstream: "smtp://127.0.0.1:1" });
  const service = createRouteService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
  expect((await service.replace(fixture.project.id, { version: 0, routes }, { actor: "test" })).ok).toBe(
    true,
  );
  return fixture.project;
}

async function queue(project: Awaited<ReturnType<typeof routedProject>>, to: string[]) {
  const message = await createQueuedMessageFixture(ctx.db, project, { to });
  await producer.enqueue(message);
  return message;
}

const received = (sink: SmtpSink, address: string) => sink.messages.filter((m) => m.rcptTo.includes(address));

describe("direct delivery", () => {
  it("delivers to the MX host of best preference, and to the implicit MX of a domain without MX", async () => {
    const project = await routedProject([{ match: "*", target: { type: "direct" } }]);
    const message = await queue(project, ["a@mx.example", "b@implicit.example"]);
    await waitForStatus(ctx.db, message.id, "delivered");
    expect(received(primary, "a@mx.example")).toHaveLength(1);
    expect(received(backup, "a@mx.example")).toHaveLength(0);
    expect(received(primary, "b@implicit.example")).toHaveLength(1);
    const recipients = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
    expect(recipients.map((r) => r.status)).toEqual(["delivered", "delivered"]);
  });

  it("tries the next MX host when the first refuses the connection", async () => {
    const project = await routedProject([{ match: "*@failover.example", target: { type: "direct" } }]);
    const message = await queue(project, ["c@failover.example"]);
    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(1);
    expect(received(backup, "c@failover.example")).toHaveLength(1);
    const [attempt] = await ctx.db.deliveryAttempt.findMany({ where: { messageId: message.id } });
    expect(attempt?.upstreamHost).toBe(`127.0.0.5:${primary.port}, 127.0.0.3:${primary.port}`);
  });

  it("fails a domain with a null MX (RFC 7505) after one attempt", async () => {
    const project = await routedProject([{ match: "*", target: { type: "direct" } }]);
    const message = await queue(project, ["d@nullmx.example"]);
    const failed = await waitForStatus(ctx.db, message.id, "failed");
    expect(failed.attempts).toBe(1);
    const [recipient] = await ctx.db.messageRecipient.findMany({ where: { messageId: message.id } });
    expect(recipient).toMatchObject({ status: "failed", code: 556, enhancedCode: "5.1.10" });
  });

  it("answers the second message from the MX cache, and asks DNS again after the TTL", async () => {
    const project = await routedProject([{ match: "*", target: { type: "direct" } }]);
    const asked = () => queries.filter((q) => q === "MX short.example").length;
    await waitForStatus(ctx.db, (await queue(project, ["e@short.example"])).id, "delivered");
    expect(asked()).toBe(1);
    await waitForStatus(ctx.db, (await queue(project, ["f@short.example"])).id, "delivered");
    expect(asked()).toBe(1);
    expect(await metrics.metrics()).toMatch(/postern_mx_lookups_total\{outcome="hit"\} [1-9]/);
    // The records' TTL is 1 s: well past it, the cache has let the answer go.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await waitForStatus(ctx.db, (await queue(project, ["g@short.example"])).id, "delivered");
    expect(asked()).toBe(2);
    expect(await metrics.metrics()).toMatch(/postern_mx_lookups_total\{outcome="miss"\} [1-9]/);
  });

  it("hybrid: what the MX hosts defer goes to the route's URLs", async () => {
    const project = await routedProject([{ match: "*", target: { type: "hybrid", urls: [relay.url] } }]);
    const message = await queue(project, ["h@dead.example"]);
    const delivered = await waitForStatus(ctx.db, message.id, "delivered");
    expect(delivered.attempts).toBe(1);
    expect(received(relay, "h@dead.example")).toHaveLength(1);
  });
});
