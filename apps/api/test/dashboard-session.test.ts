import { recordAudit } from "@postern/audit";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

/*
 * Dashboard sessions (apps/api/src/sessions.ts) through real HTTP requests against real
 * PostgreSQL and Redis: a session cookie authenticates exactly as the token it was opened with,
 * ends with that token, and cannot change anything from another origin. The dashboard's pages
 * themselves are tested in a browser (apps/dashboard/test).
 */

let ctx: TestContext;
let app: FastifyInstance;
let a: ProjectFixture;
let b: ProjectFixture;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  a = await createProjectFixture(ctx.db, ctx.config, { name: "session-a" });
  b = await createProjectFixture(ctx.db, ctx.config, { name: "session-b" });
});
afterAll(async () => {
  await app?.close();
  await ctx?.close();
});

/** Signs in with `token`; returns the `cookie` header a browser would send back and the Set-Cookie. */
async function signIn(token: string, headers: Record<string, string> = {}) {
  const response = await app.inject({ method: "POST", url: "/session", payload: { token }, headers });
  expect(response.statusCode).toBe(201);
  const setCookie = String(response.headers["set-cookie"]);
  const value = /postern_session=([^;]+)/.exec(setCookie)?.[1];
  expect(value).toBeDefined();
  return { cookie: { cookie: `postern_session=${value}` }, setCookie, body: response.json() };
}

describe("POST /session", () => {
  it("exchanges a project token for an HttpOnly, SameSite=Strict cookie with an expiry, holding no token", async () => {
    const before = Date.now();
    const { setCookie, body, cookie } = await signIn(a.apiToken.token);
    expect(body).toMatchObject({ kind: "project", projectId: a.project.id });
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\//);
    // Plain HTTP: a Secure cookie would never come back.
    expect(setCookie).not.toMatch(/Secure/);
    const expires = Date.parse(/Expires=([^;]+)/.exec(setCookie)?.[1] ?? "");
    expect(expires).toBeGreaterThan(before + ctx.config.http.dashboardSessionMs - 5_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + ctx.config.http.dashboardSessionMs);
    expect(setCookie).not.toContain(a.apiToken.token);
    // The session's key in Redis expires with it; neither key nor value holds the token or the cookie.
    const keys = await ctx.redis.keys(`${ctx.redisKeyPrefix}:dashboard-session:*`);
    const cookieValue = cookie.cookie.split("=")[1] as string;
    let found = false;
    for (const key of keys) {
      const stored = (await ctx.redis.get(key)) ?? "";
      expect(stored).not.toContain(a.apiToken.token);
      expect(key).not.toContain(cookieValue);
      const ttl = await ctx.redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(ctx.config.http.dashboardSessionMs);
      found = true;
    }
    expect(found).toBe(true);
  });

  it("marks the cookie Secure when the page was served over TLS (a TLS-terminating proxy)", async () => {
    const { setCookie } = await signIn(a.apiToken.token, {
      origin: "https://relay.example.com",
      host: "relay.example.com",
    });
    expect(setCookie).toMatch(/Secure/);
  });

  it("refuses an unknown token with 401 and sets no cookie", async () => {
    const response = await app.inject({
      method: "POST",
      url: "/session",
      payload: { token: "pst_api_nope" },
    });
    expect(response.statusCode).toBe(401);
    expect(response.json().error.code).toBe("unauthorized");
    expect(response.headers["set-cookie"]).toBeUndefined();
  });

  it("refuses a sign-in posted from another origin", async () => {
    const response = await app.inject({
      method: "POST",
      url: "/session",
      payload: { token: a.apiToken.token },
      headers: { "sec-fetch-site": "cross-site", origin: "https://evil.example" },
    });
    expect(response.statusCode).toBe(403);
    expect(response.json().error.code).toBe("cross_site_request");
  });
});

describe("a project session", () => {
  it("reads what the token reads, and another project's message is 404 as with the token", async () => {
    const { cookie } = await signIn(a.apiToken.token);
    const own = await insertMessage(ctx.db, a.project.id, { subject: "own" });
    const other = await insertMessage(ctx.db, b.project.id, { subject: "other" });
    const mine = await app.inject({ method: "GET", url: `/v1/messages/${own}`, headers: cookie });
    expect(mine.statusCode).toBe(200);
    expect(mine.json().subject).toBe("own");
    for (const headers of [cookie, bearer(a.apiToken.token)]) {
      const theirs = await app.inject({ method: "GET", url: `/v1/messages/${other}`, headers });
      expect(theirs.statusCode).toBe(404);
      expect(theirs.json().error.code).toBe("not_found");
    }
    const session = await app.inject({ method: "GET", url: "/session", headers: cookie });
    expect(session.json()).toMatchObject({ kind: "project", projectId: a.project.id });
  });

  it("does not reach /admin", async () => {
    const { cookie } = await signIn(a.apiToken.token);
    const response = await app.inject({ method: "GET", url: "/admin/projects", headers: cookie });
    expect(response.statusCode).toBe(401);
  });

  it("is counted by the token's rate limit, as the token's own requests are", async () => {
    const { cookie } = await signIn(a.apiToken.token);
    const response = await app.inject({ method: "GET", url: "/v1/project", headers: cookie });
    expect(response.statusCode).toBe(200);
    const counted = await ctx.redis.keys(`${ctx.redisKeyPrefix}:api-rate*${a.apiToken.id}`);
    expect(counted.length).toBe(1);
  });

  it("ends at once when its token is revoked", async () => {
    const fixture = await createProjectFixture(ctx.db, ctx.config, { name: "session-revoked" });
    const { cookie } = await signIn(fixture.apiToken.token);
    expect((await app.inject({ method: "GET", url: "/v1/project", headers: cookie })).statusCode).toBe(200);
    const revoked = await app.inject({
      method: "DELETE",
      url: `/admin/projects/${fixture.project.id}/tokens/${fixture.apiToken.id}`,
      headers: bearer(ctx.config.adminToken),
    });
    expect(revoked.statusCode).toBe(200);
    const after = await app.inject({ method: "GET", url: "/v1/project", headers: cookie });
    expect(after.statusCode).toBe(401);
    expect(after.json().error.message).toMatch(/session has ended/);
    // The cookie is cleared and the session is gone from Redis, not only refused.
    expect(String(after.headers["set-cookie"])).toMatch(/postern_session=;/);
    expect((await app.inject({ method: "GET", url: "/session", headers: cookie })).statusCode).toBe(401);
  });

  it("ends on sign-out", async () => {
    const { cookie } = await signIn(a.apiToken.token);
    const out = await app.inject({ method: "DELETE", url: "/session", headers: cookie });
    expect(out.statusCode).toBe(204);
    expect(String(out.headers["set-cookie"])).toMatch(/postern_session=;/);
    expect((await app.inject({ method: "GET", url: "/v1/project", headers: cookie })).statusCode).toBe(401);
  });

  it("cannot change anything from another origin; the same request from the dashboard's origin can", async () => {
    const { cookie } = await signIn(a.apiToken.token);
    const id = await insertMessage(ctx.db, a.project.id, { status: "held" });
    for (const headers of [
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site" },
      { origin: "http://127.0.0.1:9" },
      { origin: "null" },
    ]) {
      const refused = await app.inject({
        method: "POST",
        url: `/v1/messages/${id}/cancel`,
        headers: { ...cookie, host: "127.0.0.1:8080", ...headers },
      });
      expect(refused.statusCode, JSON.stringify(headers)).toBe(403);
      expect(refused.json().error.code).toBe("cross_site_request");
    }
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("held");
    // Reading stays allowed (SameSite already keeps other sites from sending the cookie).
    const read = await app.inject({
      method: "GET",
      url: `/v1/messages/${id}`,
      headers: { ...cookie, "sec-fetch-site": "same-site" },
    });
    expect(read.statusCode).toBe(200);
    const allowed = await app.inject({
      method: "POST",
      url: `/v1/messages/${id}/cancel`,
      headers: {
        ...cookie,
        host: "127.0.0.1:8080",
        origin: "http://127.0.0.1:8080",
        "sec-fetch-site": "same-origin",
      },
    });
    expect(allowed.statusCode).toBe(202);
  });

  it("is not what a bearer request's origin is judged by: a bearer token carries no ambient authority", async () => {
    const id = await insertMessage(ctx.db, a.project.id, { status: "held" });
    const response = await app.inject({
      method: "POST",
      url: `/v1/messages/${id}/cancel`,
      headers: { ...bearer(a.apiToken.token), "sec-fetch-site": "cross-site" },
    });
    expect(response.statusCode).toBe(202);
  });
});

describe("an operator session", () => {
  it("reaches /admin (every project) and not /v1", async () => {
    const { cookie, body } = await signIn(ctx.config.adminToken);
    expect(body).toMatchObject({ kind: "operator", projectId: null });
    const projects = await app.inject({ method: "GET", url: "/admin/projects", headers: cookie });
    expect(projects.statusCode).toBe(200);
    expect(projects.json().items.map((p: { name: string }) => p.name)).toEqual(
      expect.arrayContaining(["session-a", "session-b"]),
    );
    const v1 = await app.inject({ method: "GET", url: "/v1/project", headers: cookie });
    expect(v1.statusCode).toBe(401);
  });

  it("ends when ADMIN_TOKEN changes", async () => {
    const { cookie } = await signIn(ctx.config.adminToken);
    const rotated = await apiFor(ctx, {
      config: { ...ctx.config, adminToken: `${ctx.config.adminToken}-rotated` },
    });
    try {
      const response = await rotated.inject({ method: "GET", url: "/admin/projects", headers: cookie });
      expect(response.statusCode).toBe(401);
    } finally {
      await rotated.close();
    }
  });

  it("cannot change anything from another origin", async () => {
    const { cookie } = await signIn(ctx.config.adminToken);
    const response = await app.inject({
      method: "POST",
      url: "/admin/projects",
      payload: { name: "csrf", upstream: "smtp://127.0.0.1:1" },
      headers: { ...cookie, "sec-fetch-site": "cross-site" },
    });
    expect(response.statusCode).toBe(403);
    expect(await ctx.db.project.count({ where: { name: "csrf" } })).toBe(0);
  });
});

describe("the dashboard's files", () => {
  it("serves the page at / with a Content Security Policy that allows no inline script or style", async () => {
    const page = await app.inject({ method: "GET", url: "/" });
    expect(page.statusCode).toBe(200);
    expect(page.headers["content-type"]).toMatch(/text\/html/);
    const csp = String(page.headers["content-security-policy"]);
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).not.toContain("unsafe-eval");
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(page.body)?.[1];
    expect(script).toBeDefined();
    const asset = await app.inject({ method: "GET", url: script as string });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers["cache-control"]).toMatch(/immutable/);
    // Every other path is still the API's.
    const unknown = await app.inject({
      method: "GET",
      url: "/v1/nothing-here",
      headers: bearer(a.apiToken.token),
    });
    expect(unknown.json().error.code).toBe("not_found");
  });
});

describe("what the dashboard's pages read, added to the API for every client", () => {
  it("GET /v1/stats?series=hour: the window's counts hour by hour, by status", async () => {
    const fixture = await createProjectFixture(ctx.db, ctx.config, { name: "session-series" });
    const now = new Date();
    await insertMessage(ctx.db, fixture.project.id, {
      status: "delivered",
      createdAt: now,
      deliveredAt: now,
    });
    await insertMessage(ctx.db, fixture.project.id, {
      status: "failed",
      createdAt: new Date(now.getTime() - 3 * 3600_000),
    });
    const response = await app.inject({
      method: "GET",
      url: "/v1/stats?series=hour",
      headers: bearer(fixture.apiToken.token),
    });
    expect(response.statusCode).toBe(200);
    const { series, counts } = response.json();
    expect(series).toHaveLength(24);
    expect(series.reduce((sum: number, point: { accepted: number }) => sum + point.accepted, 0)).toBe(
      counts.accepted,
    );
    const hourOf = (date: Date) => new Date(Math.floor(date.getTime() / 3600_000) * 3600_000).toISOString();
    expect(series.find((p: { hour: string }) => p.hour === hourOf(now))).toMatchObject({
      delivered: 1,
      accepted: 1,
    });
    expect(
      series.find((p: { hour: string }) => p.hour === hourOf(new Date(now.getTime() - 3 * 3600_000))),
    ).toMatchObject({ failed: 1, accepted: 1 });
    const without = await app.inject({
      method: "GET",
      url: "/v1/stats",
      headers: bearer(fixture.apiToken.token),
    });
    expect(without.json().series).toBeUndefined();
    const tooLong = await app.inject({
      method: "GET",
      url: "/v1/stats?series=hour&from=2020-01-01T00:00:00Z",
      headers: bearer(fixture.apiToken.token),
    });
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.json().error.message).toMatch(/^querystring\.series/);
  });

  it("GET /v1/project: the project's credentials and tokens, never their secrets", async () => {
    const response = await app.inject({
      method: "GET",
      url: "/v1/project",
      headers: bearer(a.apiToken.token),
    });
    expect(response.statusCode).toBe(200);
    const { credentials, tokens } = response.json();
    expect(credentials).toEqual([
      expect.objectContaining({ id: a.smtp.credentialId, username: a.smtp.username, revokedAt: null }),
    ]);
    expect(tokens).toEqual([
      expect.objectContaining({ id: a.apiToken.id, prefix: a.apiToken.token.slice(0, 14) }),
    ]);
    expect(response.body).not.toContain(a.smtp.password);
    expect(response.body).not.toContain(a.apiToken.token);
    expect(response.body).not.toContain("upstream");
  });

  it("GET /admin/system: PostgreSQL, Redis and the delivery queue", async () => {
    const response = await app.inject({
      method: "GET",
      url: "/admin/system",
      headers: bearer(ctx.config.adminToken),
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      checks: { postgres: "ok", redis: "ok" },
      queue: { backlogMessages: expect.any(Number), workers: 0, delayedJobs: 0 },
    });
    const project = await app.inject({
      method: "GET",
      url: "/admin/system",
      headers: bearer(a.apiToken.token),
    });
    expect(project.statusCode).toBe(401);
  });

  it("GET /v1/audit-logs/stream: the project's own audit events, live, and no other project's", async () => {
    const url = await app.listen({ host: "127.0.0.1", port: 0 });
    const controller = new AbortController();
    try {
      // From the newest event now (Last-Event-ID), so that what is written next is streamed.
      const newest = await ctx.db.auditEvent.findFirst({ orderBy: { id: "desc" }, select: { id: true } });
      const response = await fetch(`${url}/v1/audit-logs/stream`, {
        headers: { ...bearer(a.apiToken.token), "last-event-id": String(newest?.id ?? 0) },
        signal: controller.signal,
      });
      expect(response.status).toBe(200);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let text = "";
      await recordAudit(ctx.db, {
        projectId: b.project.id,
        actor: "test",
        action: "suppression.added",
        details: { n: "b" },
      });
      await recordAudit(ctx.db, {
        projectId: a.project.id,
        actor: "test",
        action: "suppression.added",
        details: { n: "a" },
      });
      while (!text.includes('"n":"a"')) text += decoder.decode((await reader.read()).value, { stream: true });
      expect(text).toContain("event: audit");
      expect(text).not.toContain('"n":"b"');
    } finally {
      controller.abort();
    }
  });
});
