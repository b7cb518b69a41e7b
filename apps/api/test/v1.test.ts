import { randomUUID } from "node:crypto";
import { recordAudit } from "@postern/audit";
import { createRedis, deliveryQueueName } from "@postern/queue";
import { createProjectQuota } from "@postern/quota";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;
let theirs: ProjectFixture;
let theirMessage: string;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, {
    name: "mine",
    quotaPerMinute: 100,
    quotaDaily: 5000,
  });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "theirs" });
  theirMessage = await insertMessage(ctx.db, theirs.project.id, { status: "deferred" });
});
afterAll(async () => {
  await app.close();
  await ctx.close();
});

const get = (url: string, token = mine.apiToken.token) =>
  app.inject({ method: "GET", url, headers: bearer(token) });

describe("/v1 authentication", () => {
  const routes = [
    ["GET", "/v1/stats"],
    ["GET", "/v1/messages"],
    ["GET", `/v1/messages/${randomUUID()}`],
    ["POST", `/v1/messages/${randomUUID()}/retry`],
    ["GET", "/v1/audit-logs"],
  ] as const;

  it.each(routes)("%s %s answers 401 without a token", async (method, url) => {
    const response = await app.inject({ method, url });
    expect(response.statusCode).toBe(401);
    expect(response.json().error.code).toBe("unauthorized");
  });

  it.each(routes)("%s %s answers 401 with an unknown token", async (method, url) => {
    const response = await app.inject({ method, url, headers: bearer("pst_api_not-a-real-token") });
    expect(response.statusCode).toBe(401);
  });

  it("refuses a revoked token and the operator token", async () => {
    const extra = await createProjectFixture(ctx.db, ctx.config);
    await ctx.db.apiToken.update({ where: { id: extra.apiToken.id }, data: { revokedAt: new Date() } });
    expect((await get("/v1/stats", extra.apiToken.token)).statusCode).toBe(401);
    expect((await get("/v1/stats", ctx.config.adminToken)).statusCode).toBe(401);
  });

  it("records when a token was last used", async () => {
    const extra = await createProjectFixture(ctx.db, ctx.config);
    expect((await get("/v1/stats", extra.apiToken.token)).statusCode).toBe(200);
    await expect
      .poll(
        async () =>
          (await ctx.db.apiToken.findUniqueOrThrow({ where: { id: extra.apiToken.id } })).lastUsedAt,
      )
      .not.toBeNull();
  });
});

describe("GET /v1/stats", () => {
  it("counts the project's messages by status and its rejections by reason, with latency and quota limits", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { quotaPerMinute: 7, quotaDaily: 70 });
    const now = Date.now();
    for (const [status, latencyMs] of [
      ["delivered", 1000],
      ["delivered", 3000],
      ["queued", 0],
      ["deferred", 0],
      ["failed", 0],
      ["cancelled", 0],
      ["held", 0],
      ["held", 0],
      ["denied", 0],
      ["sandboxed", 0],
    ] as const) {
      const createdAt = new Date(now - 60_000);
      await insertMessage(ctx.db, project.project.id, {
        status,
        createdAt,
        deliveredAt: status === "delivered" ? new Date(createdAt.getTime() + latencyMs) : undefined,
      });
    }
    // Outside the default 24-hour window: not counted.
    await insertMessage(ctx.db, project.project.id, {
      status: "delivered",
      createdAt: new Date(now - 2 * 86_400_000),
    });
    // Another project's traffic: not counted.
    await insertMessage(ctx.db, theirs.project.id, { status: "delivered" });
    for (const reason of ["sender_not_allowed", "sender_not_allowed", "too_many_recipients"]) {
      await recordAudit(ctx.db, {
        action: "message.rejected",
        actor: "smtp:x",
        projectId: project.project.id,
        details: { reason },
      });
    }
    await recordAudit(ctx.db, { action: "quota.exceeded", actor: "smtp:x", projectId: project.project.id });

    const response = await get("/v1/stats", project.apiToken.token);
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body.counts).toEqual({
      accepted: 10,
      queued: 1,
      deferred: 1,
      delivered: 2,
      failed: 1,
      cancelled: 1,
      held: 2,
      denied: 1,
      sandboxed: 1,
      rejected: 3,
      quotaExceeded: 1,
    });
    expect(body.rejectedByReason).toEqual({ sender_not_allowed: 2, too_many_recipients: 1 });
    expect(body.deliveryLatencyMs).toMatchObject({ p50: 2000, sampled: 2 });
    expect(body.quota.perMinute.limit).toBe(7);
    expect(body.quota.daily.limit).toBe(70);
    expect(new Date(body.to).getTime() - new Date(body.from).getTime()).toBe(86_400_000);
  });

  it("follows status changes and batched inserts (the hourly counts are kept by the database)", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config);
    const id = await insertMessage(ctx.db, project.project.id, { status: "queued" });
    await ctx.db.message.createMany({
      data: Array.from({ length: 3 }, () => ({
        projectId: project.project.id,
        mailFrom: "a@example.com",
        size: 1,
        sha256: "0".repeat(64),
        status: "deferred" as const,
      })),
    });
    await ctx.db.message.update({ where: { id }, data: { status: "deferred", attempts: 1 } });
    await ctx.db.message.update({ where: { id }, data: { status: "delivered", deliveredAt: new Date() } });
    await ctx.db.message.updateMany({
      where: { projectId: project.project.id, status: "deferred" },
      data: { status: "failed" },
    });
    const counts = (await get("/v1/stats", project.apiToken.token)).json().counts;
    expect(counts).toMatchObject({ accepted: 4, queued: 0, deferred: 0, delivered: 1, failed: 3 });
    const live = await ctx.db.message.groupBy({
      by: ["status"],
      where: { projectId: project.project.id },
      _count: true,
    });
    expect(Object.fromEntries(live.map((g) => [g.status, g._count]))).toEqual({ delivered: 1, failed: 3 });
  });

  it("reports quota usage and reset times from the quota counters", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { quotaPerMinute: 100, quotaDaily: 5000 });
    const quota = createProjectQuota(ctx.redis, ctx.config.redisKeyPrefix);
    expect((await quota.reserve(project.project, 3)).ok).toBe(true);
    const response = await get("/v1/stats", project.apiToken.token);
    const usage = response.json().quota;
    expect(usage).toMatchObject({ perMinute: { limit: 100, used: 3 }, daily: { limit: 5000, used: 3 } });
    const resetsIn = new Date(usage.perMinute.resetsAt).getTime() - Date.now();
    expect(resetsIn).toBeGreaterThan(0);
    expect(resetsIn).toBeLessThanOrEqual(60_000);
    expect(new Date(usage.daily.resetsAt).getTime() - Date.now()).toBeLessThanOrEqual(86_400_000);
  });

  it("still answers when Redis is down: the rate limiter lets the request through, quota usage is null", async () => {
    const deadRedis = createRedis("redis://127.0.0.1:1", {
      maxRetriesPerRequest: 1,
      retryStrategy: () => 200,
    });
    const withoutRedis = await apiFor(ctx, { redis: deadRedis });
    const response = await withoutRedis.inject({
      method: "GET",
      url: "/v1/stats",
      headers: bearer(mine.apiToken.token),
    });
    expect(response.statusCode).toBe(200);
    expect(response.json().quota.perMinute).toEqual({ limit: 100, used: null, resetsAt: null });
    await withoutRedis.close();
    deadRedis.disconnect();
  });

  it("takes an explicit window", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config);
    await insertMessage(ctx.db, project.project.id, { createdAt: new Date("2026-01-01T12:00:00Z") });
    const response = await get(
      "/v1/stats?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
      project.apiToken.token,
    );
    expect(response.json().counts.accepted).toBe(1);
    expect(response.json().deliveryLatencyMs).toBeNull();
  });

  it("names the field of a bad window", async () => {
    const bad = await get("/v1/stats?from=yesterday-ish");
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toMatch(/querystring\.from/);
    const reversed = await get("/v1/stats?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z");
    expect(reversed.statusCode).toBe(400);
    expect(reversed.json().error.message).toMatch(/from/);
  });
});

describe("GET /v1/messages", () => {
  it("lists the project's messages newest first, paginated by cursor and filtered by status", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config);
    const base = Date.now() - 10_000;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        await insertMessage(ctx.db, project.project.id, {
          status: i === 2 ? "failed" : "delivered",
          createdAt: new Date(base + i * 1000),
          subject: `m${i}`,
        }),
      );
    }
    const seen: string[] = [];
    let url = "/v1/messages?limit=2";
    for (;;) {
      const response = await get(url, project.apiToken.token);
      expect(response.statusCode).toBe(200);
      const page = response.json();
      seen.push(...page.items.map((m: { id: string }) => m.id));
      if (!page.nextCursor) break;
      url = `/v1/messages?limit=2&cursor=${page.nextCursor}`;
    }
    expect(seen).toEqual([...ids].reverse());

    const failed = (await get("/v1/messages?status=failed", project.apiToken.token)).json();
    expect(failed.items).toHaveLength(1);
    expect(failed.items[0]).toMatchObject({
      id: ids[2],
      status: "failed",
      subject: "m2",
      to: ["user@example.net"],
    });
  });

  it("never lists another project's messages", async () => {
    const response = await get("/v1/messages?limit=200");
    expect(response.json().items.map((m: { id: string }) => m.id)).not.toContain(theirMessage);
  });

  it("names the field of bad query parameters", async () => {
    for (const [query, field] of [
      ["limit=0", "querystring.limit"],
      ["status=sent", "querystring.status"],
      ["cursor=garbage", "querystring.cursor"],
    ]) {
      const response = await get(`/v1/messages?${query}`);
      expect(response.statusCode).toBe(400);
      expect(response.json().error).toMatchObject({ code: "validation_error" });
      expect(response.json().error.message).toContain(field);
    }
  });
});

describe("GET /v1/messages/:id", () => {
  it("shows the envelope, recipients' results and every attempt", async () => {
    const id = await insertMessage(ctx.db, mine.project.id, {
      status: "failed",
      recipients: [
        { address: "a@example.net", status: "delivered", code: 250 },
        { address: "b@example.net", status: "failed", code: 550 },
      ],
      attempts: [
        { outcome: "deferred", code: 451, response: "try later" },
        { outcome: "failed", code: 550, response: "no such user" },
      ],
    });
    const response = await get(`/v1/messages/${id}`);
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body).toMatchObject({
      id,
      status: "failed",
      from: "app@example.com",
      attemptCount: 2,
      size: 1234,
    });
    expect(body.to).toEqual(["a@example.net", "b@example.net"]);
    expect(body.recipients[1]).toMatchObject({ address: "b@example.net", status: "failed", code: 550 });
    expect(body.attempts.map((a: { number: number; code: number }) => [a.number, a.code])).toEqual([
      [1, 451],
      [2, 550],
    ]);
    expect(body.attempts[1]).toMatchObject({ upstreamHost: "mx.example.net", enhancedCode: "5.1.1" });
  });

  it("answers 404 for another project's message and for an unknown id", async () => {
    expect((await get(`/v1/messages/${theirMessage}`)).statusCode).toBe(404);
    expect((await get(`/v1/messages/${randomUUID()}`)).statusCode).toBe(404);
  });

  it("answers 400 naming the id when it is not a UUID", async () => {
    const response = await get("/v1/messages/42");
    expect(response.statusCode).toBe(400);
    expect(response.json().error.message).toContain("params.id");
  });
});

describe("POST /v1/messages/:id/retry", () => {
  const retry = (id: string, token = mine.apiToken.token) =>
    app.inject({ method: "POST", url: `/v1/messages/${id}/retry`, headers: bearer(token) });

  it("requeues a failed message now, gives refused recipients another chance and audits it", async () => {
    const id = await insertMessage(ctx.db, mine.project.id, {
      status: "failed",
      recipients: [
        { address: "a@example.net", status: "delivered" },
        { address: "b@example.net", status: "failed" },
      ],
    });
    const response = await retry(id);
    expect(response.statusCode).toBe(202);
    expect(response.json()).toEqual({ id, status: "queued" });
    const row = await ctx.db.message.findUniqueOrThrow({ where: { id }, include: { recipients: true } });
    expect(row.status).toBe("queued");
    expect(Object.fromEntries(row.recipients.map((r) => [r.address, r.status]))).toEqual({
      "a@example.net": "delivered",
      "b@example.net": "pending",
    });
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    const job = await queue.getJob(id);
    expect(job?.data).toEqual({ messageId: id, projectId: mine.project.id });
    // Ready to run now (prioritized: the fair scheduler orders ready jobs by project backlog).
    expect(["waiting", "prioritized"]).toContain(await job?.getState());
    const audit = await ctx.db.auditEvent.findFirst({
      where: { action: "message.retried", projectId: mine.project.id },
    });
    expect(audit?.details).toEqual({ messageId: id });
    expect(audit?.actor).toBe(`token:${mine.apiToken.id}`);

    // A deferred message whose delayed job is waiting for its backoff: that job runs now.
    const deferred = await insertMessage(ctx.db, mine.project.id, { status: "deferred" });
    await queue.add("deliver", { messageId: deferred }, { jobId: deferred, delay: 3_600_000 });
    expect((await retry(deferred)).statusCode).toBe(202);
    expect(["waiting", "prioritized"]).toContain(await (await queue.getJob(deferred))?.getState());
    await queue.close();
  });

  it("answers 409 for a message that is not deferred or failed", async () => {
    const id = await insertMessage(ctx.db, mine.project.id, { status: "delivered" });
    const response = await retry(id);
    expect(response.statusCode).toBe(409);
    expect(response.json().error.code).toBe("invalid_transition");
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("delivered");
  });

  it("answers 404 for another project's message and leaves it alone", async () => {
    expect((await retry(theirMessage)).statusCode).toBe(404);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirMessage } })).status).toBe("deferred");
  });

  it("answers 400 for an id that is not a UUID", async () => {
    expect((await retry("nope")).statusCode).toBe(400);
  });
});

describe("GET /v1/audit-logs", () => {
  it("lists only the project's own events, newest first, with a cursor", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config);
    for (const action of ["auth.success", "message.accepted", "message.delivered"] as const) {
      await recordAudit(ctx.db, { action, actor: "smtp:k", projectId: project.project.id, ip: "192.0.2.1" });
    }
    await recordAudit(ctx.db, { action: "auth.success", actor: "smtp:k", projectId: theirs.project.id });
    const first = (await get("/v1/audit-logs?limit=2", project.apiToken.token)).json();
    expect(first.items.map((e: { action: string }) => e.action)).toEqual([
      "message.delivered",
      "message.accepted",
    ]);
    expect(first.items[0]).toMatchObject({ projectId: project.project.id, ip: "192.0.2.1", actor: "smtp:k" });
    const second = (
      await get(`/v1/audit-logs?limit=2&cursor=${first.nextCursor}`, project.apiToken.token)
    ).json();
    expect(second.items.map((e: { action: string }) => e.action)).toEqual(["auth.success"]);
    expect(second.nextCursor).toBeNull();
  });

  it("answers 400 naming a bad cursor", async () => {
    const response = await get("/v1/audit-logs?cursor=abc");
    expect(response.statusCode).toBe(400);
    expect(response.json().error.message).toContain("querystring.cursor");
  });
});
