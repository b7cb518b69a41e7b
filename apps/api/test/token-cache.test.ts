import { createApiTokenVerifier } from "@postern/auth";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

// Two API nodes on one PostgreSQL and Redis: what one node changes, the other's cache must drop.
let ctx: TestContext;
let nodeA: FastifyInstance;
let nodeB: FastifyInstance;

beforeAll(async () => {
  ctx = await createTestContext();
  nodeA = await apiFor(ctx);
  nodeB = await apiFor(ctx);
});
afterAll(async () => {
  await Promise.all([nodeA.close(), nodeB.close()]);
  await ctx.close();
});

const admin = () => bearer(ctx.config.adminToken);
const message = { from: "app@example.com", to: "user@example.net", subject: "Hi", text: "Hello" };

/** Until the node has subscribed, it remembers nothing: wait for the subscription to be counted. */
async function subscribed(nodes: number) {
  const channel = `${ctx.redisKeyPrefix}:auth-invalidation`;
  await expect
    .poll(async () => ((await ctx.redis.pubsub("NUMSUB", channel)) as [string, number])[1])
    .toBeGreaterThanOrEqual(nodes);
}

describe("API token cache", () => {
  it("answers from memory a token it has seen, until the TTL, with nothing changed in PostgreSQL", async () => {
    const { apiToken } = await createProjectFixture(ctx.db, ctx.config);
    await subscribed(2);
    expect((await nodeB.inject({ url: "/v1/stats", headers: bearer(apiToken.token) })).statusCode).toBe(200);
    // Written straight into the database: nothing published, so node B's cache still holds it.
    await ctx.db.apiToken.update({ where: { id: apiToken.id }, data: { revokedAt: new Date() } });
    expect((await nodeB.inject({ url: "/v1/stats", headers: bearer(apiToken.token) })).statusCode).toBe(200);
    // Node A never saw it: it reads the row.
    expect((await nodeA.inject({ url: "/v1/stats", headers: bearer(apiToken.token) })).statusCode).toBe(401);
  });

  it("a token revoked through node A is refused by node B at once", async () => {
    const { project, apiToken } = await createProjectFixture(ctx.db, ctx.config);
    await subscribed(2);
    expect((await nodeB.inject({ url: "/v1/stats", headers: bearer(apiToken.token) })).statusCode).toBe(200);
    const revoked = await nodeA.inject({
      method: "DELETE",
      url: `/admin/projects/${project.id}/tokens/${apiToken.id}`,
      headers: admin(),
    });
    expect(revoked.statusCode).toBe(200);
    // Published before the DELETE answered; heard by node B's subscriber a moment later.
    await expect
      .poll(
        async () => (await nodeB.inject({ url: "/v1/stats", headers: bearer(apiToken.token) })).statusCode,
      )
      .toBe(401);
  });

  it("a project suspended or restricted through node A is enforced by node B's submission at once", async () => {
    const { project, apiToken } = await createProjectFixture(ctx.db, ctx.config, {
      senderDomains: ["example.com"],
    });
    await subscribed(2);
    const submit = () =>
      nodeB.inject({
        method: "POST",
        url: "/v1/messages",
        headers: bearer(apiToken.token),
        payload: message,
      });
    expect((await submit()).statusCode).toBe(202);

    const patch = (body: object) =>
      nodeA.inject({
        method: "PATCH",
        url: `/admin/projects/${project.id}`,
        headers: admin(),
        payload: body,
      });
    expect((await patch({ senderDomains: ["example.org"] })).statusCode).toBe(200);
    await expect.poll(async () => (await submit()).json().error?.code).toBe("sender_not_allowed");

    expect((await patch({ senderDomains: ["example.com"], status: "suspended" })).statusCode).toBe(200);
    await expect.poll(async () => (await submit()).json().error?.code).toBe("project_suspended");
  });

  it("remembers nothing while it hears no invalidations (Redis down, or not subscribed yet)", async () => {
    const { apiToken } = await createProjectFixture(ctx.db, ctx.config);
    const verifier = createApiTokenVerifier({
      db: ctx.db,
      keyPrefix: ctx.redisKeyPrefix,
      cacheTtlMs: 60_000,
    });
    expect(await verifier.verify(apiToken.token)).toMatchObject({ ok: true });
    await ctx.db.apiToken.update({ where: { id: apiToken.id }, data: { revokedAt: new Date() } });
    expect(await verifier.verify(apiToken.token)).toMatchObject({ ok: false, reason: "unknown_or_revoked" });
  });

  it("an unknown token is refused and not remembered as valid", async () => {
    const verifier = createApiTokenVerifier({
      db: ctx.db,
      keyPrefix: ctx.redisKeyPrefix,
      cacheTtlMs: 60_000,
    });
    expect(await verifier.verify("pst_api_not-a-real-token")).toMatchObject({
      ok: false,
      reason: "unknown_or_revoked",
    });
  });
});
