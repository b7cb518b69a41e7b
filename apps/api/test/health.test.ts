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

function api(redis = ctx.redis) {
  return buildApi({
    config: ctx.config,
    db: ctx.db,
    redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
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
