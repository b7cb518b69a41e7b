import { readFile } from "node:fs/promises";
import {
  ApiError,
  type ApiErrorCode,
  apiErrors,
  apiErrorTable,
  errorTableEnd,
  errorTableStart,
} from "@postern/api";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import type { InjectOptions } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

type Operation = { responses: Record<string, { content?: Record<string, { schema: ErrorSchema }> }> };
type ErrorSchema = { properties?: { error?: { properties?: { code?: { enum?: string[] } } } } };

/** The codes the OpenAPI document declares for an operation, by status. */
function declaredCodes(operation: Operation): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(operation.responses)
      .map(([status, response]) => [
        status,
        // JSON, or the route's one content type (`produces`) applied to every status.
        Object.values(response.content ?? {})[0]?.schema.properties?.error?.properties?.code?.enum ?? [],
      ])
      .filter(([, codes]) => (codes?.length ?? 0) > 0),
  );
}

describe("the table of API errors", () => {
  it("gives every code one HTTP error status and a meaning", () => {
    for (const [code, spec] of Object.entries(apiErrors)) {
      expect(spec.status, code).toBeGreaterThanOrEqual(400);
      expect(spec.status, code).toBeLessThan(600);
      expect(spec.meaning.length, code).toBeGreaterThan(10);
      expect(new ApiError(code as ApiErrorCode, "x").statusCode).toBe(spec.status);
    }
    expect(new ApiError("not_found", "x").name).toBe("ApiError");
  });

  it("is the table docs/api.md lists: every code, its status and meaning, and nothing else", async () => {
    const rows = (text: string) =>
      text
        .split("\n")
        .filter((line) => /^\| \d{3} \| `/.test(line))
        .map((line) => line.split("|").map((cell) => cell.trim()));
    const file = await readFile(new URL("../../../docs/api.md", import.meta.url), "utf8");
    const doc = file.slice(file.indexOf(errorTableStart), file.indexOf(errorTableEnd));
    expect(rows(doc)).toEqual(rows(apiErrorTable()));
    expect(rows(doc).map((row) => row[2])).toEqual(Object.keys(apiErrors).map((code) => `\`${code}\``));
  });
});

describe("the OpenAPI document", () => {
  it("declares, for every /v1 and /admin route, the codes it answers, each under its own status", async () => {
    const app = await apiFor(ctx);
    const document = (await app.inject({ method: "GET", url: "/docs/json" })).json();
    await app.close();
    const paths = document.paths as Record<string, Record<string, Operation>>;
    for (const [path, operations] of Object.entries(paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const declared = declaredCodes(operation);
        for (const [status, codes] of Object.entries(declared)) {
          for (const code of codes)
            expect(apiErrors[code as ApiErrorCode].status, `${method} ${path} ${code}`).toBe(Number(status));
        }
        // Every route: the NUL check and validation run before any handler; any route can fail.
        expect(declared["400"], `${method} ${path}`).toEqual(["validation_error"]);
        expect(declared["500"], `${method} ${path}`).toEqual(["internal_error"]);
        if (path.startsWith("/v1/") || path.startsWith("/admin/")) {
          expect(declared["401"], `${method} ${path}`).toEqual(["unauthorized"]);
        }
        if (path.startsWith("/v1/")) expect(declared["429"], `${method} ${path}`).toContain("rate_limited");
      }
    }
    expect(declaredCodes(paths["/v1/messages/{id}/retry"]?.post as Operation)).toMatchObject({
      404: ["not_found"],
      409: ["invalid_transition"],
    });
    expect(declaredCodes(paths["/admin/projects/{id}"]?.delete as Operation)).toMatchObject({
      404: ["not_found"],
      409: ["messages_pending"],
    });
    expect(declaredCodes(paths["/admin/projects"]?.post as Operation)).toMatchObject({
      413: ["payload_too_large"],
      415: ["unsupported_media_type"],
    });
    expect(declaredCodes(paths["/metrics"]?.get as Operation)).toMatchObject({ 401: ["unauthorized"] });
  });
});

describe("refusals", () => {
  it("answer the status and code of the table, as each route declares them", async () => {
    const app = await apiFor(ctx);
    const document = (await app.inject({ method: "GET", url: "/docs/json" })).json();
    const project = await createProjectFixture(ctx.db, ctx.config);
    const delivered = await insertMessage(ctx.db, project.project.id, { status: "delivered" });
    const admin = bearer(ctx.config.adminToken);
    const v1 = bearer(project.apiToken.token);
    const cases: {
      route: [string, string];
      request: InjectOptions;
      code: ApiErrorCode;
    }[] = [
      {
        route: ["post", "/v1/messages/{id}/retry"],
        request: { method: "POST", url: `/v1/messages/${delivered}/retry`, headers: v1 },
        code: "invalid_transition",
      },
      {
        route: ["get", "/v1/messages/{id}"],
        request: { method: "GET", url: "/v1/messages/00000000-0000-4000-8000-000000000000", headers: v1 },
        code: "not_found",
      },
      {
        route: ["get", "/v1/messages"],
        request: { method: "GET", url: "/v1/messages?limit=0", headers: v1 },
        code: "validation_error",
      },
      { route: ["get", "/v1/stats"], request: { method: "GET", url: "/v1/stats" }, code: "unauthorized" },
      {
        route: ["post", "/admin/projects"],
        request: {
          method: "POST",
          url: "/admin/projects",
          headers: { ...admin, "content-type": "application/json" },
          payload: JSON.stringify({ name: "x".repeat(2 * 1024 * 1024), upstream: "smtp://mx.example.com" }),
        },
        code: "payload_too_large",
      },
      {
        route: ["post", "/admin/projects"],
        request: {
          method: "POST",
          url: "/admin/projects",
          headers: { ...admin, "content-type": "application/xml" },
          payload: "<project/>",
        },
        code: "unsupported_media_type",
      },
      {
        route: ["post", "/admin/projects"],
        request: {
          method: "POST",
          url: "/admin/projects",
          headers: { ...admin, "content-type": "application/json" },
          payload: "{not json",
        },
        code: "validation_error",
      },
      {
        route: ["delete", "/admin/projects/{id}"],
        request: { method: "DELETE", url: `/admin/projects/${project.project.id}`, headers: admin },
        code: "messages_pending",
      },
    ];
    // The delivered message alone does not hold the project; a queued one does.
    await insertMessage(ctx.db, project.project.id, { status: "queued" });
    for (const { route, request, code } of cases) {
      const response = await app.inject(request);
      const status = apiErrors[code].status;
      expect([response.statusCode, response.json().error.code], `${request.method} ${request.url}`).toEqual([
        status,
        code,
      ]);
      expect(typeof response.json().error.message).toBe("string");
      const operation = document.paths[route[1]][route[0]] as Operation;
      expect(declaredCodes(operation)[String(status)], `${route.join(" ")} declares ${code}`).toContain(code);
    }
    const unknown = await app.inject({ method: "GET", url: "/v1/nothing-here", headers: v1 });
    expect([unknown.statusCode, unknown.json().error.code]).toEqual([404, "not_found"]);
    await app.close();
  });
});
