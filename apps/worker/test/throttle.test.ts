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
import { until, waitForStatus } from "./wait";

/**
 * Per-destination throttling (docs/routing.md, Throttling), through the worker with direct
 * delivery: a DNS server on a loopback port (dns2) points each test domain at an SMTP sink of its
 * own on 127.0.0.x. The worker has 4 slots: a throttled delivery that held one while it waited
 * would soon hold them all.
 */

const { Packet } = dns2;
const hosts: Record<string, string> = {
  "capped.example": "127.0.0.2",
  "pushback.example": "127.0.0.3",
  "free.example": "127.0.0.4",
  "rate.example": "127.0.0.6",
};

let dnsServer: ReturnType<typeof dns2.createUDPServer>;
let ctx: TestContext;
let worker: RunningWorker;
let producer: DeliveryProducer;
let metrics: Registry;
const sinks: Record<string, SmtpSink> = {};

beforeAll(async () => {
  dnsServer = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    const name = question?.name.toLowerCase() ?? "";
    const domain = name.replace(/^mx\./, "");
    if (question && hosts[domain]) {
      if (question.type === Packet.TYPE.MX && !name.startsWith("mx."))
        response.answers.push({
          name: question.name,
          class: Packet.CLASS.IN,
          type: Packet.TYPE.MX,
          ttl: 300,
          exchange: `mx.${domain}`,
          priority: 10,
        } as never);
      if (question.type === Packet.TYPE.A && name.startsWith("mx."))
        response.answers.push({
          name: question.name,
          class: Packet.CLASS.IN,
          type: Packet.TYPE.A,
          ttl: 300,
          address: hosts[domain],
        } as never);
    } else if (question) response.header.rcode = Packet.RCODE.NXDOMAIN;
    send(response);
  });
  await new Promise<void>((resolve) => dnsServer.bind(0, "127.0.0.1", () => resolve()));
  let port = 0;
  for (const [domain, host] of Object.entries(hosts)) {
    const sink = await SmtpSink.start({ host, port });
    port = sink.port;
    sinks[domain] = sink;
  }
  ctx = await createTestContext({
    DELIVERY_BACKOFF: "1",
    DELIVERY_MAX_ATTEMPTS: "100",
    DELIVERY_CONCURRENCY: "4",
    DNS_SERVERS: `127.0.0.1:${(dnsServer.address() as AddressInfo).port}`,
    DIRECT_SMTP_PORT: String(port),
  });
  metrics = createMetricsRegistry();
  worker = await startWorker({ ...ctx, log: createLogger({ level: "silent" }), metrics });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});

afterAll(async () => {
  await worker?.stop();
  await producer?.close();
  for (const sink of Object.values(sinks)) await sink.stop();
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

async function queue(project: Awaited<ReturnType<typeof routedProject>>, to: string) {
  const message = await createQueuedMessageFixture(ctx.db, project, { to: [to] });
  await producer.enqueue(message);
  return message;
}

/** The value of a metric's series, or undefined when the series is not there. */
async function sample(series: string): Promise<number | undefined> {
  const line = (await metrics.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("per-destination throttling", () => {
  it("keeps a capped destination at its concurrency, without holding up other destinations or projects", {
    timeout: 90_000,
  }, async () => {
    const capped = sinks["capped.example"] as SmtpSink;
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let onWire = 0;
    capped.beforeDataReply = async () => {
      onWire += 1;
      await released;
    };
    const project = await routedProject([
      { match: "*@capped.example", target: { type: "direct", limits: { concurrency: 2 } } },
      { match: "*", target: { type: "direct" } },
    ]);
    const cappedMessages = [];
    for (let i = 0; i < 8; i++) cappedMessages.push(await queue(project, `c${i}@capped.example`));
    await until(() => onWire === 2, "two deliveries on the wire to capped.example");

    // Two deliveries hold capped.example's two slots; the other six go back to the queue rather
    // than wait in the worker's slots, so another destination of the project, and another
    // project, are delivered meanwhile.
    const sameProject = await queue(project, "x@free.example");
    const other = await routedProject([{ match: "*", target: { type: "direct" } }]);
    const otherProject = await queue(other, "y@free.example");
    await waitForStatus(ctx.db, sameProject.id, "delivered");
    await waitForStatus(ctx.db, otherProject.id, "delivered");
    expect(onWire).toBe(2);
    expect(await sample('postern_delivery_given_back_total{reason="destination_busy"}')).toBeGreaterThan(0);

    release();
    for (const message of cappedMessages) await waitForStatus(ctx.db, message.id, "delivered", 60_000);
    expect(capped.messages).toHaveLength(8);
    expect(capped.mostOpenConnections).toBeLessThanOrEqual(2);
    // Given back, not deferred: no attempt was recorded for a throttled delivery.
    const attempts = await ctx.db.deliveryAttempt.count({
      where: { messageId: { in: cappedMessages.map((m) => m.id) } },
    });
    expect(attempts).toBe(8);
  });

  it("halves a destination's limit when it answers 421, and raises it back as it accepts again", {
    timeout: 90_000,
  }, async () => {
    const pushback = sinks["pushback.example"] as SmtpSink;
    let pushingBack = true;
    pushback.mailReply = () =>
      pushingBack ? { code: 421, message: "4.7.0 Too many connections, slow down" } : undefined;
    const project = await routedProject([
      { match: "*@pushback.example", target: { type: "direct", limits: { concurrency: 4 } } },
    ]);
    const series = 'postern_destination_concurrency_limit{destination="pushback.example"}';
    const first = [];
    for (let i = 0; i < 3; i++) first.push(await queue(project, `p${i}@pushback.example`));
    await until(async () => ((await sample(series)) ?? 4) < 4, "the limit of pushback.example lowered");
    const lowered = (await sample(series)) as number;
    expect(lowered).toBeGreaterThanOrEqual(1);
    expect(lowered).toBeLessThanOrEqual(2);
    expect(await sample("postern_destinations_throttled")).toBeGreaterThanOrEqual(1);

    // Accepting again: each success counts, `limit` of them raise the limit by one, and back at
    // the cap of 4 the destination is no longer throttled (1 + 2 + 3 successes from the floor).
    pushingBack = false;
    for (const message of first) await waitForStatus(ctx.db, message.id, "delivered", 30_000);
    const more = [];
    for (let i = 0; i < 8; i++) more.push(await queue(project, `q${i}@pushback.example`));
    for (const message of more) await waitForStatus(ctx.db, message.id, "delivered", 60_000);
    await until(async () => (await sample(series)) === undefined, "pushback.example recovered");
    expect(pushback.messages).toHaveLength(11);
  });

  it("starts no more deliveries to a destination per minute than its rate, giving the others back", async () => {
    const rate = sinks["rate.example"] as SmtpSink;
    const project = await routedProject([
      { match: "*@rate.example", target: { type: "direct", limits: { ratePerMinute: 2 } } },
    ]);
    const messages = [];
    for (let i = 0; i < 4; i++) messages.push(await queue(project, `r${i}@rate.example`));
    await rate.waitFor(2);
    const givenBack = () => sample('postern_delivery_given_back_total{reason="destination_rate"}');
    await until(async () => ((await givenBack()) ?? 0) >= 2, "two deliveries given back for the rate");
    expect(rate.messages).toHaveLength(2);
    const ids = messages.map((m) => m.id);
    await until(
      async () => (await ctx.db.message.count({ where: { id: { in: ids }, status: "delivered" } })) === 2,
      "two messages recorded as delivered",
    );
    const waiting = await ctx.db.message.findMany({ where: { id: { in: ids }, status: "queued" } });
    // Not attempted: they wait in the queue for the minute to let them start.
    expect(waiting).toHaveLength(2);
    expect(waiting.every((m) => m.attempts === 0)).toBe(true);
  });
});
