import { createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Counter } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

describe("GET /docs/json", () => {
  it("is a valid OpenAPI document listing every route with its security", async () => {
    const app = await apiFor(ctx);
    const response = await app.inject({ method: "GET", url: "/docs/json" });
    expect(response.statusCode).toBe(200);
    const document = response.json();
    const result = await new Validator().validate(document);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);

    const routes = Object.entries(document.paths as Record<string, Record<string, unknown>>).flatMap(
      ([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(routes.sort()).toEqual(
      [
        "GET /health",
        "GET /health/ready",
        "GET /metrics",
        "GET /v1/stats",
        "GET /v1/messages",
        "GET /v1/messages/{id}",
        "POST /v1/messages",
        "GET /v1/messages/{id}/raw",
        "POST /v1/messages/{id}/retry",
        "POST /v1/messages/{id}/cancel",
        "POST /v1/messages/{id}/approve",
        "POST /v1/messages/{id}/deny",
        "GET /v1/project",
        "POST /v1/messages/actions",
        "GET /v1/messages/{id}/events",
        "GET /v1/events",
        "GET /v1/audit-logs",
        "GET /v1/audit-logs/stream",
        "POST /session",
        "GET /session",
        "DELETE /session",
        "GET /admin/system",
        "GET /v1/routes",
        "PUT /v1/routes",
        "GET /admin/projects/{projectId}/routes",
        "PUT /admin/projects/{projectId}/routes",
        "POST /admin/projects",
        "GET /admin/projects",
        "GET /admin/projects/{id}",
        "PATCH /admin/projects/{id}",
        "DELETE /admin/projects/{id}",
        "POST /admin/projects/{id}/credentials",
        "DELETE /admin/projects/{id}/credentials/{credentialId}",
        "POST /admin/projects/{id}/tokens",
        "POST /admin/projects/{projectId}/messages",
        "DELETE /admin/projects/{id}/tokens/{tokenId}",
        "GET /admin/audit-logs",
        "GET /admin/audit-logs/stream",
        "GET /admin/projects/{projectId}/messages",
        "GET /admin/projects/{projectId}/messages/{id}",
        "POST /admin/projects/{projectId}/messages/{id}/retry",
        "POST /admin/projects/{projectId}/messages/{id}/cancel",
        "POST /admin/projects/{projectId}/messages/{id}/approve",
        "POST /admin/projects/{projectId}/messages/{id}/deny",
        "GET /admin/projects/{projectId}/stats",
        "POST /admin/projects/{projectId}/messages/actions",
        "GET /admin/projects/{projectId}/messages/{id}/events",
        "GET /admin/projects/{projectId}/messages/{id}/raw",
        "GET /admin/projects/{projectId}/events",
        "GET /v1/rules",
        "PUT /v1/rules",
        "GET /admin/projects/{projectId}/rules",
        "PUT /admin/projects/{projectId}/rules",
        ...["/v1", "/admin/projects/{projectId}"].flatMap((prefix) => [
          `POST ${prefix}/domains`,
          `GET ${prefix}/domains`,
          `GET ${prefix}/domains/{id}`,
          `DELETE ${prefix}/domains/{id}`,
          `POST ${prefix}/domains/{id}/verify`,
          `POST ${prefix}/domains/{id}/rotate`,
          `GET ${prefix}/suppressions`,
          `POST ${prefix}/suppressions`,
          `DELETE ${prefix}/suppressions/{address}`,
          `GET ${prefix}/webhooks`,
          `POST ${prefix}/webhooks`,
          `GET ${prefix}/webhooks/{id}`,
          `PATCH ${prefix}/webhooks/{id}`,
          `DELETE ${prefix}/webhooks/{id}`,
          `POST ${prefix}/webhooks/{id}/test`,
          `GET ${prefix}/webhooks/{id}/deliveries`,
          `POST ${prefix}/webhooks/{id}/deliveries/{deliveryId}/replay`,
          `POST ${prefix}/webhooks/{id}/replay`,
        ]),
      ].sort(),
    );
    expect(document.paths["/v1/stats"].get.security).toEqual([{ bearer: [] }]);
    expect(document.paths["/admin/projects"].post.security).toEqual([{ admin: [] }]);
    // The project API's message routes for operators: the operator's token, the project in the path.
    const operatorCancel = document.paths["/admin/projects/{projectId}/messages/{id}/cancel"].post;
    expect(operatorCancel.security).toEqual([{ admin: [] }]);
    expect(operatorCancel.parameters.map((p: { name: string }) => p.name).sort()).toEqual([
      "id",
      "projectId",
    ]);
    expect((await app.inject({ method: "GET", url: "/docs" })).statusCode).toBeLessThan(400);
    await app.close();
  });
});

describe("GET /metrics", () => {
  it("serves the process registry, other roles' metrics included, with HTTP latency by route", async () => {
    const metrics = createMetricsRegistry();
    // What the SMTP role would register when it runs in the same process.
    new Counter({ name: "postern_smtp_messages_accepted_total", help: "test", registers: [metrics] }).inc(3);
    const app = await apiFor(ctx, { metrics });
    const project = await createProjectFixture(ctx.db, ctx.config);
    await app.inject({ method: "GET", url: "/v1/messages", headers: bearer(project.apiToken.token) });
    await app.inject({ method: "GET", url: "/health" });
    const response = await app.inject({ method: "GET", url: "/metrics" });
    expect(response.statusCode).toBe(200);
    expect(response.headers["content-type"]).toMatch(/^text\/plain/);
    expect(response.body).toContain("postern_smtp_messages_accepted_total 3");
    expect(response.body).toMatch(
      /postern_http_request_duration_seconds_count\{method="GET",route="\/v1\/messages",status="200"\} 1/,
    );
    expect(response.body).toMatch(
      /postern_http_request_duration_seconds_count\{method="GET",route="\/health",status="200"\} 1/,
    );
    expect(response.body).toContain("postern_process_cpu_seconds_total");
    await app.close();
  });
});
