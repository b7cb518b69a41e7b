import { openSecret } from "@postern/auth";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;
let theirs: ProjectFixture;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "routes-mine" });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "routes-theirs" });
});
afterAll(async () => {
  await app.close();
  await ctx.close();
});

const get = (url: string, headers = bearer(mine.apiToken.token)) =>
  app.inject({ method: "GET", url, headers });
const put = (url: string, payload: unknown, headers = bearer(mine.apiToken.token)) =>
  app.inject({ method: "PUT", url, headers, payload: payload as object });

const routes = [
  {
    match: "*@partner.example",
    target: {
      type: "upstream",
      urls: ["smtp://relay:p4ss-w0rd@mx1.partner.example:587?tls=required", "smtps://mx2.partner.example"],
    },
  },
  { match: "blocked@example.net", target: { type: "reject" } },
];

async function storedSecretOf(projectId: string): Promise<string | null> {
  const row = await ctx.db.project.findUniqueOrThrow({ where: { id: projectId } });
  const stored = row.routes as { target: { urls?: { secret: string | null }[] } }[];
  return stored[0]?.target.urls?.[0]?.secret ?? null;
}

describe("GET|PUT /v1/routes", () => {
  it("replaces the routes at the version read, never shows passwords, and refuses a stale version with 409", async () => {
    expect((await get("/v1/routes")).json()).toEqual({ version: 0, routes: [] });
    const first = await put("/v1/routes", { version: 0, routes });
    expect(first.statusCode).toBe(200);
    expect(first.json()).toEqual({ version: 1 });

    const read = await get("/v1/routes");
    expect(read.body).not.toContain("p4ss-w0rd");
    expect(read.json()).toEqual({
      version: 1,
      routes: [
        {
          match: "*@partner.example",
          target: {
            type: "upstream",
            urls: ["smtp://relay@mx1.partner.example:587?tls=required", "smtps://mx2.partner.example"],
          },
        },
        { match: "blocked@example.net", target: { type: "reject" } },
      ],
    });
    expect(openSecret((await storedSecretOf(mine.project.id)) ?? "", ctx.config.encryptionKey)).toBe(
      "p4ss-w0rd",
    );

    // The routes read back and sent again keep the stored password.
    const again = await put("/v1/routes", read.json());
    expect(again.json()).toEqual({ version: 2 });
    expect(openSecret((await storedSecretOf(mine.project.id)) ?? "", ctx.config.encryptionKey)).toBe(
      "p4ss-w0rd",
    );

    const stale = await put("/v1/routes", { version: 1, routes: [] });
    expect(stale.statusCode).toBe(409);
    expect(stale.json().error).toMatchObject({
      code: "version_conflict",
      message: expect.stringContaining("version 2"),
    });
    expect((await get("/v1/routes")).json().version).toBe(2);

    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: mine.project.id, action: "project.updated" },
    });
    expect(audit).toHaveLength(2);
    expect(JSON.stringify(audit.map((a) => a.details))).not.toContain("p4ss-w0rd");

    // Another project's routes are its own.
    expect((await get("/v1/routes", bearer(theirs.apiToken.token))).json()).toEqual({
      version: 0,
      routes: [],
    });
  });

  it("names the field of an invalid URL (422) or pattern (400)", async () => {
    const badUrl = await put(
      "/v1/routes",
      {
        version: 0,
        routes: [{ match: "*", target: { type: "upstream", urls: ["smtp://h?tls=maybe"] } }],
      },
      bearer(theirs.apiToken.token),
    );
    expect(badUrl.statusCode).toBe(422);
    expect(badUrl.json().error).toEqual({
      code: "invalid_routes",
      message: "routes[0].target.urls[0]: tls parameter can only be 'required' or 'none'",
    });
    const badGlob = await put("/v1/routes", {
      version: 0,
      routes: [{ match: "a*b@x", target: { type: "reject" } }],
    });
    expect(badGlob.statusCode).toBe(400);
    expect(badGlob.json().error.message).toContain("routes.0.match");
    const twice = await put(
      "/v1/routes",
      {
        version: 0,
        routes: [
          { match: "*", target: { type: "reject" } },
          { match: "*", target: { type: "reject" } },
        ],
      },
      bearer(theirs.apiToken.token),
    );
    expect(twice.statusCode).toBe(422);
    expect(twice.json().error.message).toBe("routes: '*' appears twice");
  });

  it("keeps a direct route's TLS policy and a route's limits, and names the field of a bad one (400)", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { name: "routes-limits" });
    const token = bearer(project.apiToken.token);
    const withPolicy = [
      {
        match: "*@gmail.example",
        target: { type: "direct", tls: "verify", limits: { concurrency: 5, ratePerMinute: 600 } },
      },
      {
        match: "*",
        target: { type: "upstream", urls: ["smtp://relay.example:587"], limits: { concurrency: 0 } },
      },
    ];
    expect((await put("/v1/routes", { version: 0, routes: withPolicy }, token)).statusCode).toBe(200);
    expect((await get("/v1/routes", token)).json()).toEqual({ version: 1, routes: withPolicy });

    const badTls = await put(
      "/v1/routes",
      { version: 1, routes: [{ match: "*", target: { type: "direct", tls: "strict" } }] },
      token,
    );
    expect(badTls.statusCode).toBe(400);
    expect(badTls.json().error.message).toContain("routes.0.target.tls");
    const badLimit = await put(
      "/v1/routes",
      { version: 1, routes: [{ match: "*", target: { type: "direct", limits: { concurrency: -1 } } }] },
      token,
    );
    expect(badLimit.statusCode).toBe(400);
    expect(badLimit.json().error.message).toContain("routes.0.target.limits.concurrency");
  });

  it("is the same under /admin/projects/:projectId for the operator", async () => {
    const admin = bearer(ctx.config.adminToken);
    const current = (await get(`/admin/projects/${theirs.project.id}/routes`, admin)).json();
    const replaced = await put(
      `/admin/projects/${theirs.project.id}/routes`,
      { version: current.version, routes: [{ match: "*@*.example", target: { type: "reject" } }] },
      admin,
    );
    expect(replaced.statusCode).toBe(200);
    expect((await get("/v1/routes", bearer(theirs.apiToken.token))).json().routes).toEqual([
      { match: "*@*.example", target: { type: "reject" } },
    ]);
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: theirs.project.id, action: "project.updated" },
      orderBy: { id: "desc" },
    });
    expect(audit?.actor).toBe("admin");
  });
});
