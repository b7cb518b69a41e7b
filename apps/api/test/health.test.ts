import { buildApi } from "@postern/api";
import { createRedis } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

function api(redis = ctx.redis, roleReadiness?: () => Record<string, string>) {
  return buildApi({
    config: ctx.config,
    db: ctx.db,
    redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
    roleReadiness,
  });
}

describe("GET /health", () => {
  it("answers 200 while the process runs", async () => {
    const app = await api();
    const response = await app.inject({ method: "GET", url: "/health" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: "ok" });
    await app.close();
  });
});

describe("GET /health/ready", () => {
  it("answers 200 when PostgreSQL and Redis answer", async () => {
    const app = await api();
    const response = await app.inject({ method: "GET", url: "/health/ready" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: "ok", checks: { postgres: "ok", redis: "ok" } });
    await app.close();
  });

  it("answers 503 naming each role of the process that does not serve, 200 once every one does", async () => {
    const states: Record<string, string> = { api: "ok", worker: "ok", smtp: "starting" };
    const app = await api(ctx.redis, () => ({ ...states }));
    const starting = await app.inject({ method: "GET", url: "/health/ready" });
    expect(starting.statusCode).toBe(503);
    expect(starting.json()).toEqual({
      status: "unavailable",
      checks: { postgres: "ok", redis: "ok", api: "ok", worker: "ok", smtp: "starting" },
    });
    states.smtp = "ok";
    const serving = await app.inject({ method: "GET", url: "/health/ready" });
    expect(serving.statusCode).toBe(200);
    expect(serving.json().checks).toEqual({
      postgres: "ok",
      redis: "ok",
      api: "ok",
      worker: "ok",
      smtp: "ok",
    });
    states.worker = "1 of 1 worker threads restarting";
    const restarting = await app.inject({ method: "GET", url: "/health/ready" });
    expect(restarting.statusCode).toBe(503);
    expect(restarting.json().checks.worker).toBe("1 of 1 worker threads restarting");
    await app.close();
  });

  it("answers 503 naming Redis when Redis does not answer", async () => {
    // A client of a Redis that is not there: a port nothing listens on.
    const deadRedis = createRedis("redis://127.0.0.1:1", {
      maxRetriesPerRequest: 1,
      retryStrategy: () => 200,
    });
    const app = await api(deadRedis);
    const response = await app.inject({ method: "GET", url: "/health/ready" });
    expect(response.statusCode).toBe(503);
    const body = response.json();
    expect(body.status).toBe("unavailable");
    expect(body.checks.postgres).toBe("ok");
    expect(body.checks.redis).not.toBe("ok");
    await app.close();
    deadRedis.disconnect();
  });
});
