import { sqlPoolOf } from "@postern/db";
import { WebhookReceiver } from "@postern/testkit";
import { createWebhookService, pruneWebhookDeliveries } from "@postern/webhooks";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { percentile, startWebhookStack, type WebhookStack } from "./webhook-stack";

/**
 * Webhooks end to end (docs/webhooks.md): messages sent over real SMTP sessions, delivered by the
 * real worker to an SMTP sink, their events dispatched from the outbox by the worker and POSTed to
 * receivers on loopback ports (hence WEBHOOK_ALLOW_PRIVATE, except where the refusal is tested).
 */

type Event = {
  id: string;
  type: string;
  messageId: string;
  createdAt: string;
  projectId: string;
  data: { recipients: Record<string, unknown>[] };
};

describe("delivery, retries, outage, isolation", () => {
  let stack: WebhookStack;
  beforeAll(async () => {
    stack = await startWebhookStack({
      WEBHOOK_ALLOW_PRIVATE: "true",
      WEBHOOK_RETRY_SCHEDULE: "1,1,1,1,1,1,1,1,1,1",
      WEBHOOK_TIMEOUT: "5",
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("POSTs each event as the contract's object, signed: the receiver verifies it with standardwebhooks", async () => {
    const receiver = await WebhookReceiver.start();
    try {
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.accepted", "message.delivered"]);
      expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
      const [messageId] = await stack.send(fixture);
      await receiver.until(
        () => receiver.acknowledged().length === 2,
        "message.accepted and message.delivered",
      );

      const verifier = new Webhook(hook.secret);
      // Requests to one endpoint run concurrently (WEBHOOK_ENDPOINT_CONCURRENCY): events arrive in
      // any order, and are put back in the outbox's order (the events API's) below.
      const arrived = receiver.received.map((r) => {
        const headers = r.headers as Record<string, string>;
        const event = verifier.verify(r.body, headers) as Event;
        expect(headers["webhook-id"]).toBe(event.id);
        expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
        expect(headers["content-type"]).toBe("application/json");
        return event;
      });
      // Another secret does not verify these bytes, nor do these headers verify other bytes.
      const stranger = new Webhook(`whsec_${Buffer.alloc(32, 7).toString("base64")}`);
      const first = receiver.received[0] as { body: string; headers: Record<string, string> };
      expect(() => stranger.verify(first.body, first.headers)).toThrow();
      expect(() => verifier.verify(first.body.replace("message.", "massage."), first.headers)).toThrow();

      // The same ids as the events API gives, in its order.
      const listed = await stack.api.inject({
        method: "GET",
        url: "/v1/events",
        headers: { authorization: `Bearer ${fixture.apiToken.token}` },
      });
      const order: string[] = listed.json().items.map((e: { id: string }) => e.id);
      expect([...order].sort()).toEqual(arrived.map((e) => e.id).sort());
      const events = [...arrived].sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id));
      expect(events.map((e) => e.type)).toEqual(["message.accepted", "message.delivered"]);
      for (const event of events) {
        expect(Object.keys(event)).toEqual(["id", "type", "createdAt", "projectId", "messageId", "data"]);
        expect(event).toMatchObject({ projectId: fixture.project.id, messageId });
      }
      expect(events[0]?.data.recipients).toEqual([
        { address: "user@example.net", status: "pending", code: null, enhancedCode: null, response: null },
      ]);
      expect(events[1]?.data.recipients).toEqual([
        expect.objectContaining({ address: "user@example.net", status: "delivered", code: 250 }),
      ]);
    } finally {
      await receiver.stop();
    }
  });

  it("500 three times then 200: acknowledged once, four attempts logged; a filter keeps other types out", async () => {
    const receiver = await WebhookReceiver.start();
    const accepted = await WebhookReceiver.start();
    try {
      receiver.answer = ({ index }) => (index < 3 ? 500 : 200);
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.delivered"]);
      await stack.addWebhook(fixture, accepted.url, ["message.accepted"]);
      const [messageId] = await stack.send(fixture);
      await receiver.until(() => receiver.acknowledged().length === 1, "the fourth attempt");
      await accepted.until(() => accepted.acknowledged().length === 1, "the accepted event");

      expect(receiver.received.map((r) => r.status)).toEqual([500, 500, 500, 200]);
      expect(new Set(receiver.received.map((r) => r.headers["webhook-id"])).size).toBe(1);
      expect(receiver.acknowledged().map((e) => e.type)).toEqual(["message.delivered"]);
      expect(accepted.acknowledged().map((e) => e.type)).toEqual(["message.accepted"]);

      await expect
        .poll(async () => (await stack.deliveries(fixture, hook.id))[0]?.status, { timeout: 10_000 })
        .toBe("succeeded");
      const [delivery] = await stack.deliveries(fixture, hook.id);
      expect(delivery).toMatchObject({ eventType: "message.delivered", payload: { messageId } });
      expect(delivery?.attempts.map((a) => [a.number, a.statusCode, a.response, a.error])).toEqual([
        [1, 500, "answered 500", "HTTP 500"],
        [2, 500, "answered 500", "HTTP 500"],
        [3, 500, "answered 500", "HTTP 500"],
        [4, 200, "answered 200", null],
      ]);
      for (const attempt of delivery?.attempts ?? []) expect(attempt.durationMs).toBeGreaterThanOrEqual(0);
      const counted = await stack.metrics.getSingleMetricAsString("postern_webhook_attempts_total");
      expect(counted).toMatch(/postern_webhook_attempts_total\{outcome="retry"\} [3-9]/);
      // The endpoint is healthy again.
      const endpoint = await stack.ctx.db.webhookEndpoint.findUniqueOrThrow({ where: { id: hook.id } });
      expect(endpoint).toMatchObject({ status: "active", failingSince: null });
    } finally {
      await receiver.stop();
      await accepted.stop();
    }
  });

  it("a receiver that is down (port closed) gets every event once it is back", async () => {
    const receiver = await WebhookReceiver.start();
    await receiver.stop();
    try {
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.accepted", "message.delivered"]);
      const ids = await stack.send(fixture, 3);
      // Every event has been tried and refused at least once while the port was closed.
      await expect
        .poll(
          async () => {
            const deliveries = await stack.deliveries(fixture, hook.id);
            return (
              deliveries.length === 6 &&
              deliveries.every((d) => /ECONNREFUSED/.test(d.attempts[0]?.error ?? ""))
            );
          },
          { timeout: 20_000 },
        )
        .toBe(true);
      await receiver.listen();
      await receiver.until(
        () => new Set(receiver.acknowledged().map((e) => e.id)).size === 6,
        "all six events",
      );
      const got = receiver.acknowledged<Event>();
      expect(new Set(got.map((e) => e.messageId))).toEqual(new Set(ids));
      await expect
        .poll(async () => (await stack.deliveries(fixture, hook.id)).map((d) => d.status).join(), {
          timeout: 10_000,
        })
        .toBe(Array(6).fill("succeeded").join());
    } finally {
      await receiver.stop();
    }
  });

  it("an endpoint that never answers does not delay another project's endpoint (p99 latency measured)", async () => {
    const dead = await WebhookReceiver.start();
    const healthy = await WebhookReceiver.start();
    dead.answer = () => "hang";
    try {
      const stuck = await stack.project();
      const fine = await stack.project();
      await stack.addWebhook(stuck, dead.url, ["message.accepted", "message.delivered"]);
      await stack.addWebhook(fine, healthy.url, ["message.accepted", "message.delivered"]);
      // The dead endpoint's lanes are all taken (WEBHOOK_ENDPOINT_CONCURRENCY) and its backlog waits.
      await stack.send(stuck, 15);
      await dead.until(() => dead.received.length >= 10, "the dead endpoint's lanes taken");
      await stack.send(fine, 15);
      await healthy.until(() => healthy.acknowledged().length === 30, "the healthy endpoint's 30 events");

      const latencies = healthy.received.map(
        (r) => r.receivedAt - Date.parse((JSON.parse(r.body) as Event).createdAt),
      );
      const p99 = percentile(latencies, 99);
      console.info(`healthy endpoint beside a dead one: p50 ${percentile(latencies, 50)} ms, p99 ${p99} ms`);
      // An event is read from the outbox within the dispatcher's 100 ms poll and sent at once; the
      // dead endpoint holds up to 10 requests for WEBHOOK_TIMEOUT (5 s) each. A shared head of line
      // would put the healthy events behind them.
      expect(p99).toBeLessThan(3_000);
      // The cap: no more than WEBHOOK_ENDPOINT_CONCURRENCY requests were ever open at the dead endpoint
      // before the first of them timed out.
      const firstTimeout = dead.received[0]?.receivedAt ?? 0;
      expect(dead.received.filter((r) => r.receivedAt < firstTimeout + 4_000).length).toBeLessThanOrEqual(10);
    } finally {
      await dead.stop();
      await healthy.stop();
    }
  });
});

describe("replay", () => {
  let stack: WebhookStack;
  beforeAll(async () => {
    stack = await startWebhookStack({ WEBHOOK_ALLOW_PRIVATE: "true", WEBHOOK_RETRY_SCHEDULE: "0.2" });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("replays one failed delivery, then every failed one since a time; audited", async () => {
    const receiver = await WebhookReceiver.start();
    receiver.answer = () => 503;
    try {
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.delivered"]);
      const auth = { authorization: `Bearer ${fixture.apiToken.token}` };
      const before = new Date();
      await stack.send(fixture, 3);
      await expect
        .poll(async () => (await stack.deliveries(fixture, hook.id)).map((d) => d.status).join(), {
          timeout: 20_000,
        })
        .toBe("failed,failed,failed");
      const failed = await stack.deliveries(fixture, hook.id);
      expect(failed.map((d) => d.attempts.length)).toEqual([2, 2, 2]);
      receiver.answer = () => 200;

      const one = failed[0] as (typeof failed)[number];
      const replayed = await stack.api.inject({
        method: "POST",
        url: `/v1/webhooks/${hook.id}/deliveries/${one.id}/replay`,
        headers: auth,
      });
      expect(replayed.statusCode).toBe(202);
      expect(replayed.json()).toMatchObject({ id: one.id, status: "pending" });
      await receiver.until(() => receiver.acknowledged().length === 1, "the replayed delivery");
      expect(receiver.acknowledged()[0]?.id).toBe(one.payload.id);

      const since = await stack.api.inject({
        method: "POST",
        url: `/v1/webhooks/${hook.id}/replay`,
        headers: auth,
        payload: { since: before.toISOString() },
      });
      expect(since.statusCode).toBe(202);
      expect(since.json()).toEqual({ replayed: 2 });
      await receiver.until(() => receiver.acknowledged().length === 3, "the two others");
      await expect
        .poll(async () => (await stack.deliveries(fixture, hook.id)).map((d) => d.status).join(), {
          timeout: 10_000,
        })
        .toBe("succeeded,succeeded,succeeded");
      const done = await stack.deliveries(fixture, hook.id);
      expect(done.map((d) => d.attempts.map((a) => a.statusCode))).toEqual([
        [503, 503, 200],
        [503, 503, 200],
        [503, 503, 200],
      ]);
      const audit = await stack.ctx.db.auditEvent.findMany({
        where: { projectId: fixture.project.id, action: "webhook.replayed" },
        orderBy: { id: "asc" },
      });
      expect(audit.map((a) => a.details)).toEqual([
        { webhookId: hook.id, deliveryIds: [one.id] },
        { webhookId: hook.id, failedSince: before.toISOString(), count: 2 },
      ]);
      // A time after them replays nothing.
      const none = await stack.api.inject({
        method: "POST",
        url: `/v1/webhooks/${hook.id}/replay`,
        headers: auth,
        payload: { since: new Date().toISOString() },
      });
      expect(none.json()).toEqual({ replayed: 0 });
    } finally {
      await receiver.stop();
    }
  });

  it("a replay carries its payload: it is sent after its event was pruned from the outbox", async () => {
    const receiver = await WebhookReceiver.start();
    receiver.answer = () => 500;
    try {
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.accepted"]);
      await stack.send(fixture);
      await expect
        .poll(async () => (await stack.deliveries(fixture, hook.id))[0]?.status, { timeout: 20_000 })
        .toBe("failed");
      const [delivery] = await stack.deliveries(fixture, hook.id);
      // EVENT_RETENTION_DAYS has passed for the event (deleted as the sweeper's pruning does).
      await stack.ctx.db.messageEvent.deleteMany({ where: { projectId: fixture.project.id } });
      receiver.answer = () => 200;
      const replayed = await stack.api.inject({
        method: "POST",
        url: `/v1/webhooks/${hook.id}/deliveries/${delivery?.id}/replay`,
        headers: { authorization: `Bearer ${fixture.apiToken.token}` },
      });
      expect(replayed.statusCode).toBe(202);
      await receiver.until(() => receiver.acknowledged().length === 1, "the replay");
      expect(JSON.parse(receiver.received.at(-1)?.body ?? "{}")).toEqual(delivery?.payload);
    } finally {
      await receiver.stop();
    }
  });
});

describe("retention", () => {
  let stack: WebhookStack;
  beforeAll(async () => {
    stack = await startWebhookStack({ WEBHOOK_ALLOW_PRIVATE: "true" });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("prunes finished deliveries (and their attempts) past EVENT_RETENTION_DAYS, never pending ones", async () => {
    const fixture = await stack.project();
    const hook = await stack.addWebhook(fixture, "http://127.0.0.1:9/retention", ["message.failed"]);
    const old = new Date(Date.now() - 100 * 86_400_000);
    const make = (status: "pending" | "succeeded" | "failed", createdAt: Date, eventId: bigint) =>
      stack.ctx.db.webhookDelivery.create({
        data: {
          endpointId: hook.id,
          eventId,
          eventType: "message.failed",
          payload: { id: String(eventId) },
          status,
          createdAt,
          log: { create: [{ number: 1, startedAt: createdAt, durationMs: 5, statusCode: 500 }] },
        },
      });
    const oldSucceeded = await make("succeeded", old, 1n);
    const oldFailed = await make("failed", old, 2n);
    const oldPending = await make("pending", old, 3n);
    const recent = await make("succeeded", new Date(), 4n);
    const deleted = await pruneWebhookDeliveries(
      sqlPoolOf(stack.ctx.db),
      new Date(Date.now() - 90 * 86_400_000),
      1,
    );
    expect(deleted).toBe(2);
    const left = await stack.ctx.db.webhookDelivery.findMany({
      where: { endpointId: hook.id },
      select: { id: true },
    });
    expect(left.map((d) => d.id).sort()).toEqual([oldPending.id, recent.id].sort());
    expect(
      await stack.ctx.db.webhookAttempt.count({
        where: { deliveryId: { in: [oldSucceeded.id, oldFailed.id] } },
      }),
    ).toBe(0);
  });
});

describe("an endpoint failing for WEBHOOK_DISABLE_AFTER", () => {
  let stack: WebhookStack;
  beforeAll(async () => {
    stack = await startWebhookStack({
      WEBHOOK_ALLOW_PRIVATE: "true",
      WEBHOOK_RETRY_SCHEDULE: "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
      WEBHOOK_DISABLE_AFTER: "1.5",
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("is disabled with an audit event, and nothing more is sent to it until it is enabled", async () => {
    const receiver = await WebhookReceiver.start();
    receiver.answer = () => 500;
    try {
      const fixture = await stack.project();
      const hook = await stack.addWebhook(fixture, receiver.url, ["message.delivered"]);
      await stack.send(fixture);
      await expect
        .poll(
          async () =>
            (await stack.ctx.db.webhookEndpoint.findUniqueOrThrow({ where: { id: hook.id } })).status,
          {
            timeout: 20_000,
          },
        )
        .toBe("disabled");
      const endpoint = await stack.ctx.db.webhookEndpoint.findUniqueOrThrow({ where: { id: hook.id } });
      expect(endpoint.disabledReason).toBe("failing");
      const audit = await stack.ctx.db.auditEvent.findMany({
        where: { projectId: fixture.project.id, action: "webhook.disabled" },
      });
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ actor: "system", details: { webhookId: hook.id, reason: "failing" } });
      const [delivery] = await stack.deliveries(fixture, hook.id);
      expect(delivery?.status).toBe("pending");
      const tried = receiver.received.length;
      // Attempts span at least WEBHOOK_DISABLE_AFTER: the first at once, then every 0.5 s.
      expect(tried).toBeGreaterThanOrEqual(3);

      // Events of the disabled endpoint are not dispatched to it; its pending delivery waits.
      const [later] = await stack.send(fixture);
      await expect
        .poll(
          async () =>
            (await stack.ctx.db.message.findUniqueOrThrow({ where: { id: later as string } })).status,
          {
            timeout: 15_000,
          },
        )
        .toBe("delivered");
      const lastEvent = await stack.ctx.db.messageEvent.findFirstOrThrow({
        where: { projectId: fixture.project.id },
        orderBy: { id: "desc" },
      });
      await expect
        .poll(
          async () =>
            (await stack.ctx.db.webhookCursor.findUniqueOrThrow({ where: { projectId: fixture.project.id } }))
              .eventId,
          { timeout: 10_000 },
        )
        .toBe(lastEvent.id);
      const auth = { authorization: `Bearer ${fixture.apiToken.token}` };
      const refused = await stack.api.inject({
        method: "POST",
        url: `/v1/webhooks/${hook.id}/test`,
        headers: auth,
      });
      expect(refused.statusCode).toBe(409);
      expect(refused.json().error.code).toBe("webhook_disabled");

      receiver.answer = () => 200;
      const enabled = await stack.api.inject({
        method: "PATCH",
        url: `/v1/webhooks/${hook.id}`,
        headers: auth,
        payload: { enabled: true },
      });
      expect(enabled.json()).toMatchObject({ status: "active", disabledReason: null, failingSince: null });
      await receiver.until(() => receiver.acknowledged().length === 1, "the waiting delivery");
      expect(receiver.acknowledged()[0]?.id).toBe(delivery?.payload.id);
      expect(await stack.deliveries(fixture, hook.id)).toHaveLength(1);
    } finally {
      await receiver.stop();
    }
  });
});

describe("addresses without WEBHOOK_ALLOW_PRIVATE", () => {
  let stack: WebhookStack;
  beforeAll(async () => {
    stack = await startWebhookStack({ WEBHOOK_RETRY_SCHEDULE: "60" });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it("refuses at creation (422) a URL on or resolving to a loopback, private or link-local address", async () => {
    const fixture = await stack.project();
    const auth = { authorization: `Bearer ${fixture.apiToken.token}` };
    const cases: [string, RegExp][] = [
      ["http://localhost:8080/hook", /localhost resolves to (127\.0\.0\.1|::1), a loopback address/],
      ["http://127.0.0.1:8080/hook", /127\.0\.0\.1, a loopback address/],
      ["http://[::1]/hook", /::1, a loopback address/],
      ["http://[::ffff:127.0.0.1]/hook", /loopback/],
      ["https://10.1.2.3/hook", /10\.1\.2\.3, a private address/],
      ["https://192.168.1.10/hook", /private/],
      ["http://169.254.169.254/latest/meta-data", /linkLocal/],
      ["http://[fd00::1]/hook", /uniqueLocal/],
      ["http://0.0.0.0/hook", /unspecified/],
    ];
    for (const [url, message] of cases) {
      const response = await stack.api.inject({
        method: "POST",
        url: "/v1/webhooks",
        headers: auth,
        payload: { url, events: ["message.delivered"] },
      });
      expect(response.statusCode, url).toBe(422);
      expect(response.json().error.code).toBe("invalid_webhook_url");
      expect(response.json().error.message, url).toMatch(message);
      expect(response.json().error.message).toContain("WEBHOOK_ALLOW_PRIVATE");
    }
    expect(await stack.ctx.db.webhookEndpoint.count({ where: { projectId: fixture.project.id } })).toBe(0);
  });

  it("checks again at connect time: an endpoint resolving to 127.0.0.1 gets nothing, the attempt says why", async () => {
    const receiver = await WebhookReceiver.start();
    try {
      const fixture = await stack.project();
      // Made while the address was allowed (or public: DNS rebinding); the worker does not allow it.
      const lenient = createWebhookService({
        db: stack.ctx.db,
        config: { ...stack.ctx.config, webhooks: { ...stack.ctx.config.webhooks, allowPrivate: true } },
      });
      const created = await lenient.create(
        fixture.project.id,
        { url: `http://localhost:${receiver.port}/hook`, events: ["message.accepted"] },
        { actor: "test" },
      );
      if (!created.ok) throw new Error(created.message);
      await stack.send(fixture);
      await expect
        .poll(async () => (await stack.deliveries(fixture, created.value.id))[0]?.attempts.length ?? 0, {
          timeout: 15_000,
        })
        .toBe(1);
      const [delivery] = await stack.deliveries(fixture, created.value.id);
      expect(delivery?.status).toBe("pending");
      expect(delivery?.attempts[0]?.statusCode).toBeNull();
      expect(delivery?.attempts[0]?.error).toMatch(
        /localhost resolves to (127\.0\.0\.1|::1), a loopback address: refused \(set WEBHOOK_ALLOW_PRIVATE=true/,
      );
      expect(receiver.received).toHaveLength(0);

      // Changing an endpoint's URL is checked as creating one is.
      const patched = await stack.api.inject({
        method: "PATCH",
        url: `/v1/webhooks/${created.value.id}`,
        headers: { authorization: `Bearer ${fixture.apiToken.token}` },
        payload: { url: "http://169.254.169.254/latest/meta-data" },
      });
      expect(patched.statusCode).toBe(422);
      expect(patched.json().error).toMatchObject({ code: "invalid_webhook_url" });
      expect(patched.json().error.message).toContain("169.254.169.254, a linkLocal address: refused");
    } finally {
      await receiver.stop();
    }
  });
});
