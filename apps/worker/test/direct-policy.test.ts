import { createServer as createHttpsServer, globalAgent, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { createProjectService, createRouteService, type RoutesInput } from "@postern/projects";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  SmtpSink,
  TestCertificateAuthority,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import dns2 from "dns2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { until, waitForStatus } from "./wait";

/**
 * Direct delivery's TLS policy per route and source addresses per project (docs/routing.md): a DNS
 * server on a loopback port (dns2) serves MX, A and TXT records; SMTP sinks on 127.0.0.x stand in
 * for MX hosts, one of them with a certificate for mx.good.example from a CA of the test's own that
 * the worker is told to trust; an HTTPS server on 127.0.0.9:443 serves MTA-STS policies
 * (mailauth's fetch goes through Node's global agent, which is given the same CA).
 */

const { Packet } = dns2;
type Answer = {
  type: number;
  ttl: number;
  address?: string;
  exchange?: string;
  priority?: number;
  data?: string[];
};
const mx = (exchange: string): Answer[] => [{ type: Packet.TYPE.MX, ttl: 300, exchange, priority: 10 }];
const a = (address: string): Answer[] => [{ type: Packet.TYPE.A, ttl: 300, address }];
const txt = (value: string): Answer[] => [{ type: Packet.TYPE.TXT, ttl: 300, data: [value] }];
const zone: Record<string, Answer[]> = {
  "MX notls.example": mx("mx.notls.example"),
  "A mx.notls.example": a("127.0.0.2"),
  "MX good.example": mx("mx.good.example"),
  "A mx.good.example": a("127.0.0.3"),
  // The same host under a name its certificate does not carry.
  "MX wrongname.example": mx("mx.wrongname.example"),
  "A mx.wrongname.example": a("127.0.0.3"),
  "MX sts.example": mx("mx.good.example"),
  "TXT _mta-sts.sts.example": txt("v=STSv1; id=20261207T1"),
  "A mta-sts.sts.example": a("127.0.0.9"),
  "MX sts-bad.example": mx("mx.good.example"),
  "TXT _mta-sts.sts-bad.example": txt("v=STSv1; id=20261207T1"),
  "A mta-sts.sts-bad.example": a("127.0.0.9"),
  "MX source.example": mx("mx.source.example"),
  "A mx.source.example": a("127.0.0.4"),
};
const policies: Record<string, string> = {
  "mta-sts.sts.example": "version: STSv1\r\nmode: enforce\r\nmx: mx.good.example\r\nmax_age: 86400\r\n",
  "mta-sts.sts-bad.example":
    "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.example\r\nmax_age: 86400\r\n",
};

let dnsServer: ReturnType<typeof dns2.createUDPServer>;
let policyServer: Server;
let ctx: TestContext;
let worker: RunningWorker;
let producer: DeliveryProducer;
let plain: SmtpSink;
let good: SmtpSink;
let source: SmtpSink;
let trustedBefore: unknown;

beforeAll(async () => {
  dnsServer = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    if (question) {
      const name = question.name.toLowerCase();
      const answers = zone[`${Packet.typeName(question.type)} ${name}`];
      for (const answer of answers ?? [])
        response.answers.push({ name: question.name, class: Packet.CLASS.IN, ...answer } as never);
      if (!Object.keys(zone).some((key) => key.endsWith(` ${name}`)))
        response.header.rcode = Packet.RCODE.NXDOMAIN;
    }
    send(response);
  });
  await new Promise<void>((resolve) => dnsServer.bind(0, "127.0.0.1", () => resolve()));
  const ca = await TestCertificateAuthority.create();
  policyServer = createHttpsServer(
    await ca.issue("mta-sts.sts.example", "mta-sts.sts-bad.example"),
    (request, response) => {
      const policy = policies[(request.headers.host ?? "").toLowerCase()];
      if (request.url !== "/.well-known/mta-sts.txt" || !policy) return response.writeHead(404).end();
      response.writeHead(200, { "content-type": "text/plain" }).end(policy);
    },
  );
  await new Promise<void>((resolve) => policyServer.listen(443, "127.0.0.9", resolve));
  trustedBefore = globalAgent.options.ca;
  globalAgent.options.ca = [ca.cert];

  plain = await SmtpSink.start({ host: "127.0.0.2", starttls: false });
  good = await SmtpSink.start({
    host: "127.0.0.3",
    port: plain.port,
    certificate: await ca.issue("mx.good.example"),
  });
  source = await SmtpSink.start({ host: "127.0.0.4", port: plain.port });
  ctx = await createTestContext({
    DNS_SERVERS: `127.0.0.1:${(dnsServer.address() as AddressInfo).port}`,
    DIRECT_SMTP_PORT: String(plain.port),
  });
  worker = await startWorker({
    ...ctx,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
    trustedCa: [ca.cert],
  });
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});

afterAll(async () => {
  globalAgent.options.ca = trustedBefore as string[] | undefined;
  await worker?.stop();
  await producer?.close();
  for (const sink of [plain, good, source]) await sink?.stop();
  await new Promise((resolve) => policyServer?.close(resolve));
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

async function attemptResponse(messageId: string) {
  const [attempt] = await ctx.db.deliveryAttempt.findMany({ where: { messageId } });
  return attempt?.response ?? "";
}

const received = (sink: SmtpSink, address: string) => sink.messages.filter((m) => m.rcptTo.includes(address));
const direct = (tls?: "opportunistic" | "required" | "verify") =>
  ({ type: "direct", ...(tls ? { tls } : {}) }) as const;

describe("TLS policy of direct routes", () => {
  it("opportunistic (the default) sends in the clear to an MX host without STARTTLS; required does not", async () => {
    const project = await routedProject([
      { match: "open@notls.example", target: direct() },
      { match: "*@notls.example", target: direct("required") },
    ]);
    const open = await queue(project, "open@notls.example");
    const strict = await queue(project, "strict@notls.example");
    await waitForStatus(ctx.db, open.id, "delivered");
    expect(received(plain, "open@notls.example")[0]?.secure).toBe(false);
    await waitForStatus(ctx.db, strict.id, "deferred");
    expect(await attemptResponse(strict.id)).toMatch(
      /127\.0\.0\.2:\d+: the route's TLS policy requires TLS, which could not be set up/,
    );
    expect(received(plain, "strict@notls.example")).toHaveLength(0);
  });

  it("verify delivers over TLS to an MX host whose certificate is valid for its name, and defers otherwise", async () => {
    const project = await routedProject([
      { match: "*@good.example", target: direct("verify") },
      { match: "*@wrongname.example", target: direct("verify") },
      { match: "lax@wrongname.example", target: direct("required") },
    ]);
    const verified = await queue(project, "v@good.example");
    const mismatch = await queue(project, "m@wrongname.example");
    const lax = await queue(project, "lax@wrongname.example");
    await waitForStatus(ctx.db, verified.id, "delivered");
    expect(received(good, "v@good.example")[0]?.secure).toBe(true);
    await waitForStatus(ctx.db, mismatch.id, "deferred");
    expect(await attemptResponse(mismatch.id)).toMatch(/TLS policy requires TLS.*altnames/);
    expect(received(good, "m@wrongname.example")).toHaveLength(0);
    // required encrypts without checking the certificate's name.
    await waitForStatus(ctx.db, lax.id, "delivered");
    expect(received(good, "lax@wrongname.example")[0]?.secure).toBe(true);
  });

  it("verify honours MTA-STS: an MX host the enforced policy lists gets the mail, one it does not list does not", async () => {
    const project = await routedProject([{ match: "*", target: direct("verify") }]);
    const listed = await queue(project, "s@sts.example");
    const unlisted = await queue(project, "s@sts-bad.example");
    await waitForStatus(ctx.db, listed.id, "delivered");
    expect(received(good, "s@sts.example")[0]?.secure).toBe(true);
    await waitForStatus(ctx.db, unlisted.id, "deferred");
    expect(await attemptResponse(unlisted.id)).toBe(
      "MX host mx.good.example is not in the MTA-STS policy of sts-bad.example (mode enforce, mx: mx.elsewhere.example)",
    );
    expect(received(good, "s@sts-bad.example")).toHaveLength(0);
  });
});

describe("source addresses", () => {
  it("connects from the project's local addresses in turn", async () => {
    const project = await routedProject([{ match: "*", target: direct() }]);
    const projects = createProjectService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
    const updated = await projects.update(
      project.id,
      { localAddresses: ["127.0.0.2", "127.0.0.3"] },
      { actor: "test" },
    );
    expect(updated.ok).toBe(true);
    const messages = [];
    for (let i = 0; i < 4; i++) messages.push(await queue(project, `s${i}@source.example`));
    for (const message of messages) await waitForStatus(ctx.db, message.id, "delivered");
    await until(() => source.messages.length === 4, "four messages at the MX host");
    expect(new Set(source.messages.map((m) => m.remoteAddress))).toEqual(new Set(["127.0.0.2", "127.0.0.3"]));
  });

  it("skips an address this host lacks (set elsewhere), and defers when none is left", async () => {
    const project = await routedProject([{ match: "*", target: direct() }]);
    // As if set through an API on another host: written without the check.
    await ctx.db.project.update({
      where: { id: project.id },
      data: { localAddresses: ["192.0.2.10", "127.0.0.3"] },
    });
    const mixed = await queue(project, "m@source.example");
    await waitForStatus(ctx.db, mixed.id, "delivered");
    expect(received(source, "m@source.example")[0]?.remoteAddress).toBe("127.0.0.3");

    const foreign = await routedProject([{ match: "*", target: direct() }]);
    await ctx.db.project.update({ where: { id: foreign.id }, data: { localAddresses: ["192.0.2.10"] } });
    const stranded = await queue(foreign, "n@source.example");
    await waitForStatus(ctx.db, stranded.id, "deferred");
    expect(await attemptResponse(stranded.id)).toBe(
      "none of the project's localAddresses is an address of this host (192.0.2.10: EADDRNOTAVAIL)",
    );
    expect(received(source, "n@source.example")).toHaveLength(0);
  });

  it("refuses a local address that is not one of this host's", async () => {
    const project = await routedProject([{ match: "*", target: direct() }]);
    const projects = createProjectService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
    const refused = await projects.update(project.id, { localAddresses: ["192.0.2.10"] }, { actor: "test" });
    expect(refused).toMatchObject({
      ok: false,
      reason: "invalid_local_address",
      message: "localAddresses: 192.0.2.10 is not an address of this host (EADDRNOTAVAIL)",
    });
    const stored = await ctx.db.project.findUniqueOrThrow({ where: { id: project.id } });
    expect(stored.localAddresses).toEqual([]);
  });
});
