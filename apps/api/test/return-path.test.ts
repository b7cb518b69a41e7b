import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
  TestDnsServer,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

/**
 * VERP over the API (docs/bounces.md): the project setting `returnPath`, and the return-path
 * records that POST /v1/domains answers when BOUNCE_DOMAIN is set, with their verify state.
 */

const bounceDomain = "bounces.postern.example";
let dns: TestDnsServer;
let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;

beforeAll(async () => {
  dns = await TestDnsServer.start();
  ctx = await createTestContext({ DNS_SERVERS: dns.address, BOUNCE_DOMAIN: bounceDomain });
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "mine" });
});
afterAll(async () => {
  await app?.close();
  await ctx?.close();
  await dns?.stop();
});

const call = (method: "GET" | "POST" | "PATCH", url: string, body?: object, token = mine.apiToken.token) =>
  app.inject({ method, url, headers: bearer(token), ...(body ? { payload: body } : {}) });

describe("returnPath", () => {
  it("is `sender` by default, set by PATCH /admin/projects/:id, shown by GET /v1/project and audited", async () => {
    expect((await call("GET", "/v1/project")).json().returnPath).toBe("sender");
    const patched = await call(
      "PATCH",
      `/admin/projects/${mine.project.id}`,
      { returnPath: "verp" },
      ctx.config.adminToken,
    );
    expect(patched.statusCode).toBe(200);
    expect(patched.json().returnPath).toBe("verp");
    expect((await call("GET", "/v1/project")).json().returnPath).toBe("verp");
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: mine.project.id, action: "project.updated" },
      orderBy: { id: "desc" },
    });
    expect(audit?.details).toMatchObject({ returnPath: "verp" });

    const bad = await call(
      "PATCH",
      `/admin/projects/${mine.project.id}`,
      { returnPath: "bounce" },
      ctx.config.adminToken,
    );
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toContain("returnPath");
  });
});

describe("the return-path records of a domain", () => {
  it("name the bounce domain's MX (the inbound host) and SPF, and verify reports each as DNS has it", async () => {
    const created = await call("POST", "/v1/domains", { domain: "shop.example.com" });
    expect(created.statusCode).toBe(201);
    const returnPath = created.json().records.filter((r: { purpose: string }) => r.purpose === "return-path");
    expect(returnPath).toEqual([
      { purpose: "return-path", type: "MX", name: bounceDomain, value: "10 postern.test" },
      { purpose: "return-path", type: "TXT", name: bounceDomain, value: "v=spf1 a:postern.test ~all" },
    ]);
    const verify = async () =>
      (await call("POST", `/v1/domains/${created.json().id}/verify`))
        .json()
        .records.filter((r: { purpose: string }) => r.purpose === "return-path") as {
        type: string;
        state: string;
        found: string[];
      }[];

    expect((await verify()).map((r) => [r.type, r.state])).toEqual([
      ["MX", "missing"],
      ["TXT", "missing"],
    ]);
    dns.setMx(bounceDomain, ["mx.elsewhere.example"]);
    dns.setTxt(bounceDomain, ["v=spf1 -all"]);
    expect((await verify()).map((r) => [r.type, r.state, r.found])).toEqual([
      ["MX", "wrong", ["mx.elsewhere.example"]],
      ["TXT", "ok", ["v=spf1 -all"]],
    ]);
    dns.setMx(bounceDomain, ["mx.elsewhere.example", "Postern.Test"]);
    expect((await verify()).map((r) => [r.type, r.state])).toEqual([
      ["MX", "ok"],
      ["TXT", "ok"],
    ]);
  });
});
