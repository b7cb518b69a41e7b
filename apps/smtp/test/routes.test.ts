import { createRouteService, type RoutesInput } from "@postern/projects";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp, type Reply } from "./smtp-client";

/**
 * A project's routes end to end (docs/routing.md): RCPT refusals by a `reject` route, delivery
 * per route with per-recipient results, failover over a route's URLs. Real SMTP sessions into
 * Postern, the real worker, SMTP sinks as upstreams.
 */

let ctx: TestContext;
let smtp: RunningSmtp;
let worker: RunningWorker;
const sinks: SmtpSink[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ DELIVERY_BACKOFF: "1,1" });
  const deps = { ...ctx, log: createLogger({ level: "silent" }) };
  smtp = await startSmtp({ ...deps, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({ ...deps, metrics: createMetricsRegistry() });
});

afterAll(async () => {
  await smtp?.stop();
  await worker?.stop();
  for (const sink of sinks) await sink.stop();
  await ctx?.close();
});

async function sink(options: Parameters<typeof SmtpSink.start>[0] = {}) {
  const started = await SmtpSink.start(options);
  sinks.push(started);
  return started;
}

async function projectRouted(upstream: string, routes: RoutesInput["routes"]): Promise<ProjectFixture> {
  const fixture = await createProjectFixture(ctx.db, ctx.config, { upstream });
  const service = createRouteService({ db: ctx.db, redis: ctx.redis, config: ctx.config });
  const result = await service.replace(fixture.project.id, { version: 0, routes }, { actor: "test" });
  expect(result.ok).toBe(true);
  return fixture;
}

/** One transaction; the replies to each RCPT and to the end of DATA (when a recipient was accepted). */
async function send(fixture: ProjectFixture, to: string[]) {
  const { client } = await RawSmtp.session(smtp.ports.smtp, fixture.smtp);
  try {
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    const rcpt: Reply[] = [];
    for (const address of to) rcpt.push(await client.command(`RCPT TO:<${address}>`));
    if (!rcpt.some((r) => r.code === 250)) return { rcpt, data: undefined, id: undefined };
    expect((await client.command("DATA")).code).toBe(354);
    client.write("From: <app@example.com>\r\nSubject: routed\r\n\r\nhello\r\n.\r\n");
    const data = await client.read();
    return { rcpt, data, id: /queued as ([0-9a-f-]{36})$/.exec(data.text)?.[1] };
  } finally {
    client.close();
  }
}

async function finalOf(messageId: string) {
  await expect
    .poll(async () => (await ctx.db.message.findUniqueOrThrow({ where: { id: messageId } })).status, {
      timeout: 20_000,
    })
    .toMatch(/^(delivered|failed)$/);
  return ctx.db.message.findUniqueOrThrow({
    where: { id: messageId },
    include: { recipients: { orderBy: { address: "asc" } }, deliveryAttempts: true },
  });
}

describe("routes", () => {
  it("refuses a recipient on a reject route with 550 5.7.1 at RCPT, and only that one", async () => {
    const upstream = await sink();
    const fixture = await projectRouted(upstream.url, [
      { match: "*@blocked.example", target: { type: "reject" } },
      { match: "ok@blocked.example", target: { type: "upstream", urls: [upstream.url] } },
    ]);
    const sent = await send(fixture, ["x@blocked.example", "ok@blocked.example", "y@other.example"]);
    expect(sent.rcpt.map((r) => [r.code, r.enhanced])).toEqual([
      [550, "5.7.1"],
      [250, "2.1.5"],
      [250, "2.1.5"],
    ]);
    expect(sent.rcpt[0]?.text).toContain("*@blocked.example");
    expect(sent.data?.code).toBe(250);
    // Two routes (the project's upstream and one naming the same URL): two transactions.
    await upstream.waitFor(2);
    expect(upstream.messages.flatMap((m) => m.rcptTo).sort()).toEqual([
      "ok@blocked.example",
      "y@other.example",
    ]);
    await expect
      .poll(() =>
        ctx.db.auditEvent.findMany({ where: { projectId: fixture.project.id, action: "message.rejected" } }),
      )
      .toEqual([
        expect.objectContaining({
          details: expect.objectContaining({ reason: "route_reject", recipient: "x@blocked.example" }),
        }),
      ]);
  });

  it("delivers a message whose recipients fall on different routes to each, the most specific winning", async () => {
    const byDefault = await sink();
    const domain = await sink();
    const vip = await sink();
    const subdomains = await sink();
    const fixture = await projectRouted(byDefault.url, [
      { match: "*@a.example", target: { type: "upstream", urls: [domain.url] } },
      { match: "vip@a.example", target: { type: "upstream", urls: [vip.url] } },
      { match: "*@*.a.example", target: { type: "upstream", urls: [subdomains.url] } },
    ]);
    const sent = await send(fixture, ["x@a.example", "VIP@a.example", "z@eu.a.example", "y@other.example"]);
    const message = await finalOf(sent.id as string);
    expect(message.status).toBe("delivered");
    expect(domain.messages.map((m) => m.rcptTo)).toEqual([["x@a.example"]]);
    expect(vip.messages.map((m) => m.rcptTo)).toEqual([["VIP@a.example"]]);
    expect(subdomains.messages.map((m) => m.rcptTo)).toEqual([["z@eu.a.example"]]);
    expect(byDefault.messages.map((m) => m.rcptTo)).toEqual([["y@other.example"]]);
    expect(message.recipients.map((r) => [r.address, r.status, r.code])).toEqual([
      ["VIP@a.example", "delivered", 250],
      ["x@a.example", "delivered", 250],
      ["y@other.example", "delivered", 250],
      ["z@eu.a.example", "delivered", 250],
    ]);
    expect(message.deliveryAttempts).toHaveLength(1);
    expect(message.deliveryAttempts[0]?.upstreamHost).toContain(`127.0.0.1:${vip.port}`);
    expect(message.deliveryAttempts[0]?.upstreamHost).toContain(`127.0.0.1:${byDefault.port}`);
  });

  it("fails over from a dead upstream, then from one answering 4xx, to the next URL of the route", async () => {
    const dead = await sink();
    await dead.down();
    const busy = await sink();
    busy.rcptReply = () => ({ code: 451, message: "4.3.0 try later" });
    const last = await sink();
    const fixture = await projectRouted("smtp://127.0.0.1:1", [
      { match: "*", target: { type: "upstream", urls: [dead.url, busy.url, last.url] } },
    ]);
    const sent = await send(fixture, ["someone@example.net"]);
    const message = await finalOf(sent.id as string);
    expect(message.status).toBe("delivered");
    expect(message.attempts).toBe(1);
    expect(last.messages.map((m) => m.rcptTo)).toEqual([["someone@example.net"]]);
    expect(busy.messages).toHaveLength(0);
    expect(message.deliveryAttempts[0]?.upstreamHost).toBe(
      `127.0.0.1:${dead.port}, 127.0.0.1:${busy.port}, 127.0.0.1:${last.port}`,
    );
  });

  it("a 5xx at the first URL is final: no failover", async () => {
    const refusing = await sink();
    refusing.rcptReply = () => ({ code: 550, message: "5.1.1 no such user" });
    const second = await sink();
    const fixture = await projectRouted("smtp://127.0.0.1:1", [
      { match: "*@example.net", target: { type: "upstream", urls: [refusing.url, second.url] } },
    ]);
    const sent = await send(fixture, ["nobody@example.net"]);
    const message = await finalOf(sent.id as string);
    expect(message.status).toBe("failed");
    expect(message.recipients[0]).toMatchObject({ status: "failed", code: 550, enhancedCode: "5.1.1" });
    expect(second.messages).toHaveLength(0);
  });
});
