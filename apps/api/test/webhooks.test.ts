import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

/**
 * `/v1/webhooks` and `/admin/projects/:projectId/webhooks` (CONTRACT §9, docs/webhooks.md): the
 * endpoints' lifecycle, the secret shown once and stored sealed, audit events, other projects'
 * ids. Delivery itself is tested with the worker (apps/worker/test/webhooks.test.ts).
 */

let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;
let theirs: ProjectFixture;

beforeAll(async () => {
  // Loopback URLs stand for public endpoints here (the refusal is tested with the worker).
  ctx = await createTestContext({ WEBHOOK_ALLOW_PRIVATE: "true" });
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "hooks-mine" });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "hooks-theirs" });
});
afterAll(async () => {
  await app?.close();
  await ctx?.close();
});

const as = (fixture: ProjectFixture) => bearer(fixture.apiToken.token);
const call = (
  method: "GET" | "POST" | "PATCH" | "DELETE",
  url: string,
  payload?: unknown,
  headers = as(mine),
) => app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) });

describe("/v1/webhooks", () => {
  it("creates (201, secret once, sealed at rest), lists, shows, changes, deletes (204); each audited without the secret", async () => {
    const created = await call("POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/hooks",
      events: ["message.delivered", "message.failed", "message.delivered"],
      description: "billing",
    });
    expect(created.statusCode).toBe(201);
    const hook = created.json();
    expect(hook).toMatchObject({
      url: "http://127.0.0.1:9/hooks",
      events: ["message.delivered", "message.failed"],
      description: "billing",
      status: "active",
      failingSince: null,
    });
    expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const row = await ctx.db.webhookEndpoint.findUniqueOrThrow({ where: { id: hook.id } });
    expect(row.secretSealed).not.toContain(hook.secret.slice(6));
    expect(row.secretSealed).toMatch(/^v1\./);

    const listed = await call("GET", "/v1/webhooks");
    expect(listed.json().items).toHaveLength(1);
    expect(listed.body).not.toContain(hook.secret);
    const shown = await call("GET", `/v1/webhooks/${hook.id}`);
    expect(shown.statusCode).toBe(200);
    expect(shown.json()).not.toHaveProperty("secret");

    const changed = await call("PATCH", `/v1/webhooks/${hook.id}`, {
      events: ["message.accepted"],
      url: "http://127.0.0.1:9/v2",
    });
    expect(changed.statusCode).toBe(200);
    expect(changed.json()).toMatchObject({ events: ["message.accepted"], url: "http://127.0.0.1:9/v2" });
    const disabled = await call("PATCH", `/v1/webhooks/${hook.id}`, { enabled: false });
    expect(disabled.json()).toMatchObject({ status: "disabled", disabledReason: "manual" });
    const enabled = await call("PATCH", `/v1/webhooks/${hook.id}`, { enabled: true });
    expect(enabled.json()).toMatchObject({ status: "active", disabledReason: null });

    expect((await call("DELETE", `/v1/webhooks/${hook.id}`)).statusCode).toBe(204);
    expect((await call("GET", `/v1/webhooks/${hook.id}`)).statusCode).toBe(404);
    // The project's last endpoint took its place in the outbox with it.
    expect(await ctx.db.webhookCursor.count({ where: { projectId: mine.project.id } })).toBe(0);

    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: mine.project.id, action: { startsWith: "webhook." } },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => a.action)).toEqual([
      "webhook.created",
      "webhook.updated",
      "webhook.disabled",
      "webhook.enabled",
      "webhook.deleted",
    ]);
    expect(audit.every((a) => a.actor === `token:${mine.apiToken.id}`)).toBe(true);
    expect(JSON.stringify(audit.map((a) => a.details))).not.toContain(hook.secret.slice(6));
    expect(audit[2]?.details).toEqual({ webhookId: hook.id, reason: "manual" });
  });

  it("refuses what is not an endpoint: bad URL, credentials in it, unknown or no event type, empty patch", async () => {
    const bad = [
      [{ url: "ftp://example.com/x", events: ["message.delivered"] }, "body.url"],
      [{ url: "https://user:pw@example.com/x", events: ["message.delivered"] }, "body.url"],
      [{ url: "https://example.com/x", events: ["message.sent"] }, "body.events"],
      [{ url: "https://example.com/x", events: [] }, "body.events"],
      [{ events: ["message.delivered"] }, "body.url"],
    ] as const;
    for (const [payload, field] of bad) {
      const response = await call("POST", "/v1/webhooks", payload);
      expect(response.statusCode, JSON.stringify(payload)).toBe(400);
      expect(response.json().error.message).toContain(field);
    }
    const created = (
      await call("POST", "/v1/webhooks", { url: "http://127.0.0.1:9/x", events: ["message.failed"] })
    ).json();
    expect((await call("PATCH", `/v1/webhooks/${created.id}`, {})).statusCode).toBe(400);
  });

  it("another project's webhook is 404 on every route; the operator reaches it under /admin/projects/:projectId", async () => {
    const created = await call(
      "POST",
      "/v1/webhooks",
      { url: "http://127.0.0.1:9/theirs", events: ["message.failed"] },
      as(theirs),
    );
    const id = created.json().id as string;
    const delivery = "00000000-0000-7000-8000-000000000000";
    const routes: [Parameters<typeof call>[0], string, unknown?][] = [
      ["GET", `/v1/webhooks/${id}`],
      ["PATCH", `/v1/webhooks/${id}`, { description: "mine now" }],
      ["DELETE", `/v1/webhooks/${id}`],
      ["POST", `/v1/webhooks/${id}/test`],
      ["GET", `/v1/webhooks/${id}/deliveries`],
      ["POST", `/v1/webhooks/${id}/deliveries/${delivery}/replay`],
      ["POST", `/v1/webhooks/${id}/replay`, { since: new Date(0).toISOString() }],
    ];
    for (const [method, url, payload] of routes) {
      const response = await call(method, url, payload);
      expect(response.statusCode, `${method} ${url}`).toBe(404);
      expect(response.json().error.code).toBe("not_found");
    }
    expect((await call("GET", "/v1/webhooks")).json().items.map((w: { id: string }) => w.id)).not.toContain(
      id,
    );
    expect(await ctx.db.webhookDelivery.count({ where: { endpointId: id } })).toBe(0);

    const admin = { authorization: `Bearer ${ctx.config.adminToken}` };
    const asOperator = await app.inject({
      method: "GET",
      url: `/admin/projects/${theirs.project.id}/webhooks/${id}`,
      headers: admin,
    });
    expect(asOperator.statusCode).toBe(200);
    const tested = await app.inject({
      method: "POST",
      url: `/admin/projects/${theirs.project.id}/webhooks/${id}/test`,
      headers: admin,
    });
    expect(tested.statusCode).toBe(202);
    expect(tested.json()).toMatchObject({ eventType: "webhook.test", eventId: null, status: "pending" });
    expect(tested.json().payload).toMatchObject({
      type: "webhook.test",
      projectId: theirs.project.id,
      messageId: null,
      data: { test: true, recipients: [] },
    });
    const listed = await app.inject({
      method: "GET",
      url: `/admin/projects/${theirs.project.id}/webhooks/${id}/deliveries`,
      headers: admin,
    });
    expect(listed.json().items.map((d: { id: string }) => d.id)).toEqual([tested.json().id]);
    const wrongProject = await app.inject({
      method: "GET",
      url: `/admin/projects/${mine.project.id}/webhooks/${id}`,
      headers: admin,
    });
    expect(wrongProject.statusCode).toBe(404);
    const deleted = await app.inject({
      method: "DELETE",
      url: `/admin/projects/${theirs.project.id}/webhooks/${id}`,
      headers: admin,
    });
    expect(deleted.statusCode).toBe(204);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: theirs.project.id, action: "webhook.deleted" },
    });
    expect(audit.actor).toBe("admin");
  });

  it("pages deliveries newest first with a cursor", async () => {
    const created = (
      await call("POST", "/v1/webhooks", { url: "http://127.0.0.1:9/pages", events: ["message.failed"] })
    ).json();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await call("POST", `/v1/webhooks/${created.id}/test`)).json().id);
    const first = (await call("GET", `/v1/webhooks/${created.id}/deliveries?limit=2`)).json();
    expect(first.items.map((d: { id: string }) => d.id)).toEqual([ids[2], ids[1]]);
    expect(first.nextCursor).toBe(ids[1]);
    const second = (
      await call("GET", `/v1/webhooks/${created.id}/deliveries?limit=2&cursor=${first.nextCursor}`)
    ).json();
    expect(second.items.map((d: { id: string }) => d.id)).toEqual([ids[0]]);
    expect(second.nextCursor).toBeNull();
    const pending = (await call("GET", `/v1/webhooks/${created.id}/deliveries?status=succeeded`)).json();
    expect(pending.items).toEqual([]);
  });
});
