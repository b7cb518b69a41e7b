import { sqlPoolOf } from "@postern/db";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispatchRound, recordAttempts } from "../src/delivery-store";
import { createWebhookService } from "../src/endpoints";

/**
 * The dispatcher's reading of the outbox (packages/webhooks delivery-store.ts `dispatchRound`):
 * by (txId, id), so an event whose transaction commits after a later event's is not passed over,
 * and each (endpoint, event) gets one delivery whatever runs at once.
 */

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ WEBHOOK_ALLOW_PRIVATE: "true" });
});
afterAll(async () => {
  await ctx?.close();
});

async function projectWithEndpoint() {
  const fixture = await createProjectFixture(ctx.db, ctx.config);
  const created = await createWebhookService(ctx).create(
    fixture.project.id,
    { url: "http://127.0.0.1:9/dispatch", events: ["message.accepted"] },
    { actor: "test" },
  );
  if (!created.ok) throw new Error(created.message);
  const message = await createQueuedMessageFixture(ctx.db, fixture.project);
  return { projectId: fixture.project.id, endpointId: created.value.id, messageId: message.id };
}

const insertEvent = (client: pg.ClientBase | pg.Pool, projectId: string, messageId: string, n: number) =>
  client.query(
    `INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "data") VALUES ($1, $2, 'message.accepted', $3)`,
    [projectId, messageId, JSON.stringify({ n, recipients: ["a@example.net"] })],
  );

const dispatched = async (endpointId: string) =>
  (await ctx.db.webhookDelivery.findMany({ where: { endpointId }, orderBy: { eventId: "asc" } })).map(
    (d) => (d.payload as { data: { n: number } }).data.n,
  );

describe("dispatchRound", () => {
  it("does not pass over an event whose transaction commits after a later one's", async () => {
    const { projectId, endpointId, messageId } = await projectWithEndpoint();
    const pool = sqlPoolOf(ctx.db);
    const early = new pg.Client({ connectionString: ctx.databaseUrl });
    await early.connect();
    try {
      await early.query("BEGIN");
      // The open transaction's event takes the lower id; the other commits first with a higher one.
      await insertEvent(early, projectId, messageId, 1);
      await insertEvent(pool, projectId, messageId, 2);
      await dispatchRound(pool, { maxProjects: 10, eventsPerProject: 10 });
      // The committed event waits behind the open transaction's: nothing is dispatched yet.
      expect(await dispatched(endpointId)).toEqual([]);
      await early.query("COMMIT");
      // Once every older transaction of the cluster has ended (other suites share it): both, in order.
      await expect
        .poll(async () => {
          await dispatchRound(pool, { maxProjects: 10, eventsPerProject: 10 });
          return dispatched(endpointId);
        })
        .toEqual([1, 2]);
    } finally {
      await early.end();
    }
  });

  it("creates one delivery per event and endpoint, with rounds running at once and again", async () => {
    const { projectId, endpointId, messageId } = await projectWithEndpoint();
    const pool = sqlPoolOf(ctx.db);
    for (let n = 0; n < 30; n++) await insertEvent(pool, projectId, messageId, n);
    const rounds = await Promise.all(
      Array.from({ length: 4 }, () => dispatchRound(pool, { maxProjects: 10, eventsPerProject: 7 })),
    );
    await expect
      .poll(async () => {
        rounds.push(await dispatchRound(pool, { maxProjects: 10, eventsPerProject: 7 }));
        return dispatched(endpointId);
      })
      .toEqual(Array.from({ length: 30 }, (_, n) => n));
    expect(rounds.reduce((sum, r) => sum + (r.deliveries.get(endpointId) ?? 0), 0)).toBe(30);
  });
});

describe("recordAttempts", () => {
  it("commits without waiting for the WAL flush, for its own transaction only", async () => {
    const { endpointId } = await projectWithEndpoint();
    const delivery = await ctx.db.webhookDelivery.create({
      data: { endpointId, eventType: "webhook.test", payload: { id: "x" }, nextAttemptAt: new Date() },
    });
    const client = new pg.Client({ connectionString: ctx.databaseUrl });
    await client.connect();
    try {
      const record = {
        deliveryId: delivery.id,
        endpointId,
        status: "succeeded" as const,
        nextAttemptAt: null,
        startedAt: new Date(),
        durationMs: 3,
        statusCode: 204,
        response: "",
        error: null,
      };
      // As in production (the test cluster runs without it, for speed).
      await client.query("SET synchronous_commit = on");
      await client.query("BEGIN");
      await recordAttempts(client, [record], { disableAfterMs: 60_000 });
      expect((await client.query("SHOW synchronous_commit")).rows[0].synchronous_commit).toBe("off");
      await client.query("COMMIT");
      expect((await client.query("SHOW synchronous_commit")).rows[0].synchronous_commit).toBe("on");
      const row = await ctx.db.webhookDelivery.findUniqueOrThrow({
        where: { id: delivery.id },
        include: { log: true },
      });
      expect(row).toMatchObject({ status: "succeeded", lastStatusCode: 204 });
      expect(row.log.map((a) => [a.number, a.statusCode])).toEqual([[1, 204]]);
    } finally {
      await client.end();
    }
  });
});
