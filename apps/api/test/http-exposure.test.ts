import { connect } from "node:net";
import { startApi, startProbes } from "@postern/api";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

const metricsToken = "scrape-0123456789abcdef";
const withMetricsToken = () => ({ ...ctx.config, http: { ...ctx.config.http, metricsToken } });

describe("GET /metrics and METRICS_TOKEN", () => {
  it("is open when METRICS_TOKEN is unset", async () => {
    const app = await apiFor(ctx);
    const response = await app.inject({ method: "GET", url: "/metrics" });
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain("postern_http_request_duration_seconds");
    await app.close();
  });

  it("answers 401 without the token or with a wrong one, and the metrics with it", async () => {
    const app = await apiFor(ctx, { config: withMetricsToken() });
    const none = await app.inject({ method: "GET", url: "/metrics" });
    expect(none.statusCode).toBe(401);
    expect(none.json().error.message).toContain("METRICS_TOKEN");
    const wrong = await app.inject({ method: "GET", url: "/metrics", headers: bearer(`${metricsToken}x`) });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.body).not.toContain("postern_");
    // The operator token is not the metrics token.
    const admin = await app.inject({
      method: "GET",
      url: "/metrics",
      headers: bearer(ctx.config.adminToken),
    });
    expect(admin.statusCode).toBe(401);
    const right = await app.inject({ method: "GET", url: "/metrics", headers: bearer(metricsToken) });
    expect(right.statusCode).toBe(200);
    expect(right.body).toContain("postern_http_request_duration_seconds");
    // Health probes stay open: orchestrators probe without credentials.
    expect((await app.inject({ method: "GET", url: "/health" })).statusCode).toBe(200);
    await app.close();
  });

  it("is required by the probes of a process without the API too", async () => {
    const probes = await startProbes({
      config: { http: { host: "127.0.0.1", port: 0, metricsToken } },
      db: ctx.db,
      redis: ctx.redis,
      log: createLogger({ level: "silent" }),
      metrics: createMetricsRegistry(),
    });
    expect((await fetch(`${probes.address}/metrics`)).status).toBe(401);
    const scraped = await fetch(`${probes.address}/metrics`, { headers: bearer(metricsToken) });
    expect(scraped.status).toBe(200);
    const health = await fetch(`${probes.address}/health`);
    expect(health.status).toBe(200);
    expect(health.headers.get("x-content-type-options")).toBe("nosniff");
    await probes.stop();
  });
});

describe("HTTP_HOST", () => {
  it("is the one address the API listens on", async () => {
    const api = await startApi({
      config: { ...ctx.config, http: { ...ctx.config.http, host: "127.0.0.2", port: 0 } },
      db: ctx.db,
      redis: ctx.redis,
      log: createLogger({ level: "silent" }),
      metrics: createMetricsRegistry(),
    });
    try {
      const { port, hostname } = new URL(api.address);
      expect(hostname).toBe("127.0.0.2");
      expect((await fetch(`http://127.0.0.2:${port}/health`)).status).toBe(200);
      // Nothing listens on the same port of another loopback address.
      const refused = await new Promise<string>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port: Number(port) });
        socket.once("connect", () => {
          socket.destroy();
          resolve("connected");
        });
        socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
      });
      expect(refused).toBe("ECONNREFUSED");
    } finally {
      await api.stop();
    }
  });
});

describe("Cache-Control: no-store", () => {
  it("is on every answer that carries a new secret, and on the rest of /admin and /v1", async () => {
    const app = await apiFor(ctx);
    const admin = bearer(ctx.config.adminToken);
    const created = await app.inject({
      method: "POST",
      url: "/admin/projects",
      headers: admin,
      payload: {
        name: "No store",
        upstream: "smtp://127.0.0.1:1",
        quota: { perMinute: 10, daily: 100 },
        senderDomains: ["example.com"],
        maxRecipients: 5,
      },
    });
    expect(created.statusCode).toBe(201);
    expect(created.json().smtp.password).toBeTruthy();
    expect(created.headers["cache-control"]).toBe("no-store");
    const id = created.json().id as string;

    const credential = await app.inject({
      method: "POST",
      url: `/admin/projects/${id}/credentials`,
      headers: admin,
    });
    expect(credential.statusCode).toBe(201);
    expect(credential.json().password).toBeTruthy();
    expect(credential.headers["cache-control"]).toBe("no-store");

    const token = await app.inject({ method: "POST", url: `/admin/projects/${id}/tokens`, headers: admin });
    expect(token.statusCode).toBe(201);
    expect(token.json().token).toBeTruthy();
    expect(token.headers["cache-control"]).toBe("no-store");

    const listed = await app.inject({ method: "GET", url: "/admin/projects", headers: admin });
    expect(listed.headers["cache-control"]).toBe("no-store");
    const stats = await app.inject({ method: "GET", url: "/v1/stats", headers: bearer(token.json().token) });
    expect(stats.statusCode).toBe(200);
    expect(stats.headers["cache-control"]).toBe("no-store");
    await app.close();
  });
});

describe("security headers", () => {
  it("are on API answers, and /docs still renders under its Content Security Policy", async () => {
    const app = await apiFor(ctx);
    for (const url of ["/health", "/admin/projects", "/v1/stats", "/no-such-route"]) {
      const response = await app.inject({ method: "GET", url });
      expect(response.headers["x-content-type-options"], url).toBe("nosniff");
      expect(response.headers["x-frame-options"], url).toBe("SAMEORIGIN");
      expect(response.headers["referrer-policy"], url).toBe("no-referrer");
    }

    const docs = await app.inject({ method: "GET", url: "/docs/" });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers["content-type"]).toContain("text/html");
    const csp = String(docs.headers["content-security-policy"]);
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'self'");
    // Served over plain HTTP: the browser must not be told to fetch the scripts over HTTPS.
    expect(csp).not.toContain("upgrade-insecure-requests");
    expect(docs.headers["strict-transport-security"]).toBeUndefined();
    // Every script and style the page loads is its own ('self'), and each is served.
    const assets = [...docs.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string);
    expect(assets.some((asset) => asset.endsWith("swagger-ui-bundle.js"))).toBe(true);
    for (const asset of assets) {
      expect(asset, asset).not.toMatch(/^[a-z]+:\/\//);
      const url = new URL(asset, "http://api.test/docs/").pathname;
      expect((await app.inject({ method: "GET", url })).statusCode, url).toBe(200);
    }
    expect(docs.body).not.toMatch(/<script>(?!\s*<\/script>)/);
    expect((await app.inject({ method: "GET", url: "/docs" })).statusCode).toBeLessThan(400);
    await app.close();
  });
});

describe("a NUL character in a request", () => {
  it("is 400 naming the field, in a body, an array of a body and a query", async () => {
    const app = await apiFor(ctx);
    const admin = bearer(ctx.config.adminToken);
    const created = await app.inject({
      method: "POST",
      url: "/admin/projects",
      headers: admin,
      payload: { name: "bad\u0000name", upstream: "smtp://127.0.0.1:1" },
    });
    expect(created.statusCode).toBe(400);
    expect(created.json()).toEqual({
      error: { code: "validation_error", message: "body.name: must not contain the NUL character (U+0000)" },
    });
    expect(await ctx.db.project.count({ where: { name: { startsWith: "bad" } } })).toBe(0);

    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const patched = await app.inject({
      method: "PATCH",
      url: `/admin/projects/${project.id}`,
      headers: admin,
      payload: { senderDomains: ["example.com", "exa\u0000mple.com"] },
    });
    expect(patched.statusCode).toBe(400);
    expect(patched.json().error.message).toBe(
      "body.senderDomains.1: must not contain the NUL character (U+0000)",
    );

    const audit = await app.inject({
      method: "GET",
      url: "/admin/audit-logs?action=auth.%00",
      headers: admin,
    });
    expect(audit.statusCode).toBe(400);
    expect(audit.json().error.message).toBe(
      "querystring.action: must not contain the NUL character (U+0000)",
    );
    await app.close();
  });
});
