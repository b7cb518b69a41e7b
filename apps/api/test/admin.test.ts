import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { auditEventJson } from "@postern/audit";
import { authInvalidationChannel, openSecret } from "@postern/auth";
import { createRedis } from "@postern/queue";
import { createLogger } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import bcrypt from "bcrypt";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let logs = "";
const invalidations: unknown[] = [];
let subscriber: ReturnType<typeof createRedis>;

beforeAll(async () => {
  ctx = await createTestContext();
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs += chunk.toString();
      done();
    },
  });
  app = await apiFor(ctx, { log: createLogger({ level: "trace" }, sink) });
  subscriber = createRedis(ctx.redisUrl);
  await subscriber.subscribe(authInvalidationChannel(ctx.config.redisKeyPrefix));
  subscriber.on("message", (_channel, message) => invalidations.push(JSON.parse(message)));
});
afterAll(async () => {
  subscriber.disconnect();
  await app.close();
  await ctx.close();
});

const admin = () => bearer(ctx.config.adminToken);
const call = (method: "GET" | "POST" | "PATCH" | "DELETE", url: string, payload?: object) =>
  app.inject({ method, url, headers: admin(), payload });

const validProject = {
  name: "Acme transactional",
  upstream: "smtp://relay-user:upstream-pa55@mx.example.net:587?tls=required",
  quota: { perMinute: 120, daily: 10_000 },
  senderDomains: ["Acme.example"],
  maxRecipients: 20,
};

async function createProject(body: object = validProject) {
  const response = await call("POST", "/admin/projects", body);
  expect(response.statusCode).toBe(201);
  return response.json();
}

describe("/admin authentication", () => {
  const id = randomUUID();
  const routes = [
    ["POST", "/admin/projects"],
    ["GET", "/admin/projects"],
    ["GET", `/admin/projects/${id}`],
    ["PATCH", `/admin/projects/${id}`],
    ["DELETE", `/admin/projects/${id}`],
    ["POST", `/admin/projects/${id}/credentials`],
    ["DELETE", `/admin/projects/${id}/credentials/${id}`],
    ["POST", `/admin/projects/${id}/tokens`],
    ["DELETE", `/admin/projects/${id}/tokens/${id}`],
    ["GET", "/admin/audit-logs"],
    ["GET", "/admin/audit-logs/stream"],
  ] as const;

  it.each(routes)(
    "%s %s answers 401 without a token, with a wrong one and with a project token",
    async (method, url) => {
      const project = await createProjectFixture(ctx.db, ctx.config);
      for (const headers of [{}, bearer("pst_admin_wrong"), bearer(project.apiToken.token)]) {
        const response = await app.inject({
          method,
          url,
          headers,
          payload: method === "GET" ? undefined : {},
        });
        expect(response.statusCode).toBe(401);
        expect(response.json().error.code).toBe("unauthorized");
      }
    },
  );
});

describe("POST /admin/projects", () => {
  it("creates the project, shows its secrets once, stores only hashes and seals the upstream password", async () => {
    const created = await createProject();
    expect(created).toMatchObject({
      name: "Acme transactional",
      status: "active",
      upstream: "smtp://relay-user@mx.example.net:587?tls=required",
      quota: { perMinute: 120, daily: 10_000 },
      senderDomains: ["acme.example"],
      maxRecipients: 20,
    });
    expect(created.smtp.username).toMatch(/^pst_smtp_/);
    expect(created.smtp.password).toMatch(/^pst_secret_/);
    expect(created.apiToken.token).toMatch(/^pst_api_/);

    const stored = await ctx.db.project.findUniqueOrThrow({
      where: { id: created.id },
      include: { credentials: true, tokens: true },
    });
    expect(openSecret(stored.upstreamSecret as string, ctx.config.encryptionKey)).toBe("upstream-pa55");
    expect(await bcrypt.compare(created.smtp.password, stored.credentials[0]?.secretHash as string)).toBe(
      true,
    );
    expect(JSON.stringify(stored)).not.toContain(created.apiToken.token);

    // The new token works on /v1 at once.
    const stats = await app.inject({
      method: "GET",
      url: "/v1/stats",
      headers: bearer(created.apiToken.token),
    });
    expect(stats.statusCode).toBe(200);

    const actions = await ctx.db.auditEvent.findMany({
      where: { projectId: created.id },
      orderBy: { id: "asc" },
    });
    expect(actions.map((e) => e.action)).toEqual(["project.created", "credential.created", "token.created"]);
    expect(actions.every((e) => e.actor === "admin")).toBe(true);

    // The secrets appear in no later response, no audit entry and no log line.
    const shown = await call("GET", `/admin/projects/${created.id}`);
    const listed = await call("GET", "/admin/projects");
    const trail = await call("GET", `/admin/audit-logs?projectId=${created.id}`);
    for (const text of [
      shown.body,
      listed.body,
      trail.body,
      JSON.stringify(actions.map(auditEventJson)),
      logs,
    ]) {
      for (const secret of [
        created.smtp.password,
        created.apiToken.token,
        "upstream-pa55",
        ctx.config.adminToken,
      ]) {
        expect(text).not.toContain(secret);
      }
    }
    // Request ids in the logs, so one request's lines can be followed.
    expect(logs).toMatch(/"reqId":"req-[0-9a-z]+"/);
    expect(shown.json().credentials).toEqual([
      expect.objectContaining({ id: created.smtp.id, username: created.smtp.username, revokedAt: null }),
    ]);
    expect(shown.json().tokens[0]).toMatchObject({
      id: created.apiToken.id,
      prefix: created.apiToken.prefix,
    });
    expect(listed.json().items.map((p: { id: string }) => p.id)).toContain(created.id);
  });

  it("uses defaults for omitted limits", async () => {
    const created = await createProject({ name: "minimal", upstream: "smtps://smtp.example.net" });
    expect(created).toMatchObject({
      quota: { perMinute: 600, daily: 100_000 },
      maxRecipients: 50,
      senderDomains: [],
    });
  });

  it.each([
    [{ ...validProject, name: undefined }, "body.name"],
    [{ ...validProject, upstream: "http://mx.example.net" }, "body.upstream"],
    [{ ...validProject, upstream: "smtp://mx.example.net?tls=maybe" }, "body.upstream"],
    [{ ...validProject, quota: { perMinute: -1 } }, "body.quota.perMinute"],
    [{ ...validProject, senderDomains: ["not a domain"] }, "body.senderDomains.0"],
    [{ ...validProject, maxRecipients: 1.5 }, "body.maxRecipients"],
  ])("answers 400 naming the field (%#)", async (body, field) => {
    const before = await ctx.db.project.count();
    const response = await call("POST", "/admin/projects", body);
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe("validation_error");
    expect(response.json().error.message).toContain(field);
    expect(await ctx.db.project.count()).toBe(before);
  });
});

describe("GET /admin/projects/:id", () => {
  it("answers 404 for an unknown project and 400 for a malformed id", async () => {
    expect((await call("GET", `/admin/projects/${randomUUID()}`)).statusCode).toBe(404);
    const malformed = await call("GET", "/admin/projects/x");
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json().error.message).toContain("params.id");
  });
});

describe("PATCH /admin/projects/:id", () => {
  it("suspends and resumes, audits each and tells every SMTP node", async () => {
    const created = await createProject();
    invalidations.length = 0;
    const suspended = await call("PATCH", `/admin/projects/${created.id}`, { status: "suspended" });
    expect(suspended.statusCode).toBe(200);
    expect(suspended.json().status).toBe("suspended");
    await expect.poll(() => invalidations).toContainEqual({ kind: "project", projectId: created.id });
    expect((await call("PATCH", `/admin/projects/${created.id}`, { status: "active" })).json().status).toBe(
      "active",
    );
    const actions = await ctx.db.auditEvent.findMany({
      where: { projectId: created.id },
      orderBy: { id: "asc" },
    });
    expect(actions.map((e) => e.action).slice(-2)).toEqual(["project.suspended", "project.resumed"]);
  });

  it("changes quota, upstream and sender domains, auditing what changed without the password", async () => {
    const created = await createProject();
    const response = await call("PATCH", `/admin/projects/${created.id}`, {
      quota: { daily: 50 },
      upstream: "smtps://u:new-secret-pw@mx2.example.net:465",
      senderDomains: ["b.example"],
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      quota: { perMinute: 120, daily: 50 },
      upstream: "smtps://u@mx2.example.net:465",
      senderDomains: ["b.example"],
    });
    const event = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: created.id, action: "project.updated" },
    });
    expect(event.details).toEqual({
      quotaDaily: 50,
      upstream: "smtps://u@mx2.example.net:465",
      senderDomains: ["b.example"],
    });
    expect(JSON.stringify(auditEventJson(event))).not.toContain("new-secret-pw");
  });

  it("answers 400 for an empty change or a bad value, 404 for an unknown project", async () => {
    const created = await createProject();
    expect((await call("PATCH", `/admin/projects/${created.id}`, {})).statusCode).toBe(400);
    const bad = await call("PATCH", `/admin/projects/${created.id}`, { status: "paused" });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toContain("body.status");
    expect((await call("PATCH", `/admin/projects/${created.id}`, { upstream: "ftp://x" })).statusCode).toBe(
      400,
    );
    expect((await call("PATCH", `/admin/projects/${randomUUID()}`, { name: "x" })).statusCode).toBe(404);
  });
});

describe("PATCH /admin/projects/:id localAddresses", () => {
  it("sets the source addresses of direct delivery when the host has them, and names one it has not", async () => {
    const created = await createProject();
    const set = await call("PATCH", `/admin/projects/${created.id}`, {
      localAddresses: ["127.0.0.2", "127.0.0.3"],
    });
    expect(set.statusCode).toBe(200);
    expect(set.json().localAddresses).toEqual(["127.0.0.2", "127.0.0.3"]);
    const foreign = await call("PATCH", `/admin/projects/${created.id}`, { localAddresses: ["192.0.2.10"] });
    expect(foreign.statusCode).toBe(400);
    expect(foreign.json().error).toEqual({
      code: "validation_error",
      message: "body.localAddresses: 192.0.2.10 is not an address of this host (EADDRNOTAVAIL)",
    });
    const notAnAddress = await call("PATCH", `/admin/projects/${created.id}`, {
      localAddresses: ["mx.example"],
    });
    expect(notAnAddress.statusCode).toBe(400);
    expect(notAnAddress.json().error.message).toContain("body.localAddresses");
    const stored = await ctx.db.project.findUniqueOrThrow({ where: { id: created.id } });
    expect(stored.localAddresses).toEqual(["127.0.0.2", "127.0.0.3"]);
  });
});

describe("DELETE /admin/projects/:id", () => {
  it("refuses while messages are queued or deferred, deletes when forced, and audits it", async () => {
    const created = await createProject();
    await insertMessage(ctx.db, created.id, { status: "deferred" });
    const refused = await call("DELETE", `/admin/projects/${created.id}`);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe("messages_pending");
    expect(await ctx.db.project.count({ where: { id: created.id } })).toBe(1);

    expect((await call("DELETE", `/admin/projects/${created.id}?force=true`)).statusCode).toBe(204);
    expect(await ctx.db.project.count({ where: { id: created.id } })).toBe(0);
    const event = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: created.id, action: "project.deleted" },
    });
    expect(event.details).toEqual({ forced: true, pendingMessagesDropped: 1 });
    // Its token stops working with it.
    const stats = await app.inject({
      method: "GET",
      url: "/v1/stats",
      headers: bearer(created.apiToken.token),
    });
    expect(stats.statusCode).toBe(401);
  });

  it("deletes a project with nothing pending without force; 404 for an unknown one; 400 for a bad force", async () => {
    const created = await createProject();
    await insertMessage(ctx.db, created.id, { status: "delivered" });
    expect((await call("DELETE", `/admin/projects/${created.id}`)).statusCode).toBe(204);
    expect((await call("DELETE", `/admin/projects/${created.id}`)).statusCode).toBe(404);
    expect((await call("DELETE", `/admin/projects/${randomUUID()}?force=yes`)).statusCode).toBe(400);
  });
});

describe("credentials", () => {
  it("issues a credential whose secret verifies, revokes it at once and announces the revocation", async () => {
    const created = await createProject();
    const issued = await call("POST", `/admin/projects/${created.id}/credentials`);
    expect(issued.statusCode).toBe(201);
    const credential = issued.json();
    const row = await ctx.db.smtpCredential.findUniqueOrThrow({ where: { key: credential.username } });
    expect(await bcrypt.compare(credential.password, row.secretHash)).toBe(true);

    invalidations.length = 0;
    const revoked = await call("DELETE", `/admin/projects/${created.id}/credentials/${credential.id}`);
    expect(revoked.statusCode).toBe(200);
    expect(
      (await ctx.db.smtpCredential.findUniqueOrThrow({ where: { id: credential.id } })).revokedAt,
    ).not.toBeNull();
    await expect
      .poll(() => invalidations)
      .toContainEqual({ kind: "credential", credentialId: credential.id });
    // Revoking again changes nothing and writes no second event.
    expect(
      (await call("DELETE", `/admin/projects/${created.id}/credentials/${credential.id}`)).json().revokedAt,
    ).toBe(revoked.json().revokedAt);
    const events = await ctx.db.auditEvent.findMany({
      where: { projectId: created.id, action: "credential.revoked" },
    });
    expect(events).toHaveLength(1);
    expect(JSON.stringify(events.map(auditEventJson))).not.toContain(credential.password);
  });

  it("answers 404 for a credential of another project and for an unknown project", async () => {
    const a = await createProject();
    const b = await createProject();
    const response = await call("DELETE", `/admin/projects/${a.id}/credentials/${b.smtp.id}`);
    expect(response.statusCode).toBe(404);
    expect(
      (await ctx.db.smtpCredential.findUniqueOrThrow({ where: { id: b.smtp.id } })).revokedAt,
    ).toBeNull();
    expect((await call("POST", `/admin/projects/${randomUUID()}/credentials`)).statusCode).toBe(404);
    expect((await call("DELETE", `/admin/projects/${a.id}/credentials/nope`)).statusCode).toBe(400);
  });
});

describe("tokens", () => {
  it("issues a token that works on /v1 and revokes it", async () => {
    const created = await createProject();
    const issued = await call("POST", `/admin/projects/${created.id}/tokens`);
    expect(issued.statusCode).toBe(201);
    const { id, token } = issued.json();
    const v1 = () => app.inject({ method: "GET", url: "/v1/messages", headers: bearer(token) });
    expect((await v1()).statusCode).toBe(200);
    expect((await call("DELETE", `/admin/projects/${created.id}/tokens/${id}`)).statusCode).toBe(200);
    expect((await v1()).statusCode).toBe(401);
    const event = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: created.id, action: "token.revoked" },
    });
    expect(JSON.stringify(auditEventJson(event))).not.toContain(token);
  });

  it("answers 404 for another project's token", async () => {
    const a = await createProject();
    const b = await createProject();
    expect((await call("DELETE", `/admin/projects/${a.id}/tokens/${b.apiToken.id}`)).statusCode).toBe(404);
    expect((await call("POST", `/admin/projects/${randomUUID()}/tokens`)).statusCode).toBe(404);
  });
});

describe("GET /admin/audit-logs", () => {
  it("filters by project, action and time", async () => {
    const a = await createProject();
    await createProject();
    const byProject = (await call("GET", `/admin/audit-logs?projectId=${a.id}`)).json();
    expect(byProject.items.every((e: { projectId: string }) => e.projectId === a.id)).toBe(true);
    expect(byProject.items).toHaveLength(3);
    const byAction = (await call("GET", `/admin/audit-logs?projectId=${a.id}&action=token.created`)).json();
    expect(byAction.items.map((e: { action: string }) => e.action)).toEqual(["token.created"]);
    const future = (await call("GET", "/admin/audit-logs?from=2999-01-01T00:00:00Z")).json();
    expect(future.items).toEqual([]);
    const past = (await call("GET", "/admin/audit-logs?to=2000-01-01T00:00:00Z")).json();
    expect(past.items).toEqual([]);
  });

  it("names a bad filter", async () => {
    const response = await call("GET", "/admin/audit-logs?action=project.exploded");
    expect(response.statusCode).toBe(400);
    expect(response.json().error.message).toContain("querystring.action");
  });
});
