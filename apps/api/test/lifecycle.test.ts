import { randomUUID } from "node:crypto";
import {
  allowedTransitions,
  checkAction,
  checkTransition,
  type LifecycleAction,
  lifecycleActions,
} from "@postern/messages";
import { deliveryQueueName } from "@postern/queue";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;
let theirs: ProjectFixture;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-mine" });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-theirs" });
});
afterAll(async () => {
  await app.close();
  await ctx.close();
});

const post = (url: string, payload?: unknown, token = mine.apiToken.token) =>
  app.inject({ method: "POST", url, headers: bearer(token), payload: payload as object });
const get = (url: string, token = mine.apiToken.token) =>
  app.inject({ method: "GET", url, headers: bearer(token) });

async function eventTypes(messageId: string): Promise<string[]> {
  const events = await ctx.db.messageEvent.findMany({ where: { messageId }, orderBy: { id: "asc" } });
  return events.map((e) => e.type);
}

describe("POST /v1/messages/:id/cancel", () => {
  it.each(["queued", "deferred"] as const)(
    "cancels a %s message, with its message.cancelled event and audit event",
    async (status) => {
      const id = await insertMessage(ctx.db, mine.project.id, { status });
      const response = await post(`/v1/messages/${id}/cancel`);
      expect(response.statusCode).toBe(202);
      expect(response.json()).toEqual({ id, status: "cancelled" });
      const row = await ctx.db.message.findUniqueOrThrow({ where: { id } });
      expect(row.status).toBe("cancelled");
      expect(row.nextAttemptAt).toBeNull();
      expect(row.completedAt).not.toBeNull();
      expect(await eventTypes(id)).toEqual(["message.cancelled"]);
      const events = (await get(`/v1/messages/${id}/events`)).json();
      expect(events.items.map((e: { type: string }) => e.type)).toEqual(["message.cancelled"]);
      const audit = await ctx.db.auditEvent.findFirst({
        where: { action: "message.cancelled", details: { equals: { messageId: id } } },
      });
      expect(audit?.actor).toBe(`token:${mine.apiToken.id}`);
      expect((await get(`/v1/messages/${id}`)).json().status).toBe("cancelled");
    },
  );

  it.each(["delivered", "failed", "cancelled"] as const)(
    "answers 409 invalid_transition for a %s message and writes nothing",
    async (status) => {
      const id = await insertMessage(ctx.db, mine.project.id, { status });
      const response = await post(`/v1/messages/${id}/cancel`);
      expect(response.statusCode).toBe(409);
      expect(response.json().error.code).toBe("invalid_transition");
      expect(response.json().error.message).toContain(status);
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe(status);
      expect(await eventTypes(id)).toEqual([]);
    },
  );

  it("answers 404 for another project's message and an unknown one, and leaves it alone", async () => {
    const theirMessage = await insertMessage(ctx.db, theirs.project.id, { status: "queued" });
    expect((await post(`/v1/messages/${theirMessage}/cancel`)).statusCode).toBe(404);
    expect((await post(`/v1/messages/${randomUUID()}/cancel`)).statusCode).toBe(404);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirMessage } })).status).toBe("queued");
  });

  it("a cancelled message cannot be retried (409), a failed one retried then cancelled writes both events", async () => {
    const cancelled = await insertMessage(ctx.db, mine.project.id, { status: "cancelled" });
    expect((await post(`/v1/messages/${cancelled}/retry`)).json().error.code).toBe("invalid_transition");
    const failed = await insertMessage(ctx.db, mine.project.id, { status: "failed" });
    expect((await post(`/v1/messages/${failed}/retry`)).statusCode).toBe(202);
    expect((await post(`/v1/messages/${failed}/cancel`)).statusCode).toBe(202);
    expect(await eventTypes(failed)).toEqual(["message.retried", "message.cancelled"]);
  });
});

describe("every status against every action of the API: the transition table decides", () => {
  const statuses = [
    "queued",
    "deferred",
    "failed",
    "delivered",
    "cancelled",
    "held",
    "denied",
    "sandboxed",
  ] as const;
  const cases = statuses.flatMap((from) =>
    (Object.keys(lifecycleActions) as LifecycleAction[]).map((action) => ({
      from,
      action,
      to: lifecycleActions[action].to,
      event: lifecycleActions[action].event,
      allowed: checkAction(action, from).ok && checkTransition(from, lifecycleActions[action].to).ok,
    })),
  );

  it.each(cases)(
    "$action of a $from message: allowed $allowed (202 with its event, else 409 invalid_transition and nothing written)",
    async ({ from, action, to, event, allowed }) => {
      const id = await insertMessage(ctx.db, mine.project.id, { status: from });
      const response = await post(`/v1/messages/${id}/${action}`);
      const status = (await ctx.db.message.findUniqueOrThrow({ where: { id } })).status;
      if (allowed) {
        expect(response.statusCode).toBe(202);
        expect(response.json()).toEqual({ id, status: to });
        expect(status).toBe(to);
        expect(await eventTypes(id)).toEqual([event]);
      } else {
        expect(response.statusCode).toBe(409);
        expect(response.json().error).toMatchObject({ code: "invalid_transition" });
        expect(response.json().error.message).toContain(from);
        expect(status).toBe(from);
        expect(await eventTypes(id)).toEqual([]);
      }
    },
  );

  it("the cases above are every status the schema has", () => {
    expect([...statuses].sort()).toEqual(Object.keys(allowedTransitions).sort());
  });
});

describe("GET /v1/messages filters", () => {
  let project: ProjectFixture;
  const ids: Record<string, string> = {};
  const base = Date.parse("2026-11-01T12:00:00Z");

  beforeAll(async () => {
    project = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-filters" });
    const rows = [
      ["a", "alice@example.com", "bob@example.net", "Invoice 42 (100% paid)", 0],
      ["b", "alice@example.com", "carol@example.net", "Weekly digest", 1],
      ["c", "dave@example.com", "bob@example.net", "Your INVOICE", 2],
      ["d", "dave@example.com", "erin@example.net", "Welcome", 3],
    ] as const;
    for (const [name, mailFrom, to, subject, hours] of rows) {
      ids[name] = await insertMessage(ctx.db, project.project.id, {
        mailFrom,
        subject,
        recipients: [{ address: to }, { address: "archive@example.org" }],
        createdAt: new Date(base + hours * 3_600_000),
      });
    }
    // Another project's message matching every filter: never listed.
    await insertMessage(ctx.db, theirs.project.id, {
      mailFrom: "alice@example.com",
      subject: "Invoice",
      recipients: [{ address: "bob@example.net" }],
      createdAt: new Date(base),
    });
  });

  const list = async (query: string) => {
    const response = await get(`/v1/messages?${query}`, project.apiToken.token);
    expect(response.statusCode).toBe(200);
    return response.json().items.map((m: { id: string }) => m.id);
  };

  it("by sender", async () => {
    expect(await list("from=alice@example.com")).toEqual([ids.b, ids.a]);
  });

  it("by recipient, listing every recipient of the matches", async () => {
    expect(await list("to=bob@example.net")).toEqual([ids.c, ids.a]);
    const items = (await get("/v1/messages?to=erin@example.net", project.apiToken.token)).json().items;
    expect(items[0].to).toEqual(["erin@example.net", "archive@example.org"]);
  });

  it("by subject substring, case-insensitive, with LIKE's wildcards taken literally", async () => {
    expect(await list("subject=invoice")).toEqual([ids.c, ids.a]);
    expect(await list("subject=100%25")).toEqual([ids.a]);
    expect(await list("subject=%25")).toEqual([ids.a]);
    expect(await list("subject=W_lcome")).toEqual([]);
  });

  it("by time range (after inclusive, before exclusive)", async () => {
    const at = (hours: number) => new Date(base + hours * 3_600_000).toISOString();
    expect(await list(`createdAfter=${at(1)}&createdBefore=${at(3)}`)).toEqual([ids.c, ids.b]);
    expect(await list(`createdAfter=${at(3)}`)).toEqual([ids.d]);
  });

  it("combined, and paged with the cursor", async () => {
    expect(await list("from=dave@example.com&to=bob@example.net&subject=voice")).toEqual([ids.c]);
    const first = (await get("/v1/messages?to=archive@example.org&limit=3", project.apiToken.token)).json();
    expect(first.items.map((m: { id: string }) => m.id)).toEqual([ids.d, ids.c, ids.b]);
    const second = (
      await get(
        `/v1/messages?to=archive@example.org&limit=3&cursor=${first.nextCursor}`,
        project.apiToken.token,
      )
    ).json();
    expect(second.items.map((m: { id: string }) => m.id)).toEqual([ids.a]);
    expect(second.nextCursor).toBeNull();
  });

  it("answers 400 naming a bad time", async () => {
    const response = await get("/v1/messages?createdAfter=yesterday", project.apiToken.token);
    expect(response.statusCode).toBe(400);
    expect(response.json().error.message).toContain("createdAfter");
  });
});

describe("POST /v1/messages/actions", () => {
  it("dry run and real run match the same messages; only allowed transitions change; one audit event", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-bulk" });
    const token = project.apiToken.token;
    const from = "bulk@example.com";
    const byStatus: Record<string, string> = {};
    for (const status of ["queued", "deferred", "delivered", "failed", "cancelled"] as const)
      byStatus[status] = await insertMessage(ctx.db, project.project.id, { status, mailFrom: from });
    // Not matched: another sender; another project.
    const other = await insertMessage(ctx.db, project.project.id, { status: "queued" });
    const theirMessage = await insertMessage(ctx.db, theirs.project.id, { status: "queued", mailFrom: from });

    const body = { action: "cancel", filter: { from } };
    const dry = await post("/v1/messages/actions", { ...body, dryRun: true }, token);
    expect(dry.statusCode).toBe(200);
    expect(dry.json()).toEqual({ matched: 5, changed: 2 });
    expect(await ctx.db.auditEvent.count({ where: { projectId: project.project.id } })).toBe(0);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: byStatus.queued } })).status).toBe(
      "queued",
    );

    const real = await post("/v1/messages/actions", body, token);
    expect(real.statusCode).toBe(200);
    expect(real.json()).toEqual({ matched: 5, changed: 2 });
    for (const status of ["queued", "deferred"]) {
      const id = byStatus[status] as string;
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("cancelled");
      expect(await eventTypes(id)).toEqual(["message.cancelled"]);
    }
    for (const status of ["delivered", "failed", "cancelled"]) {
      const id = byStatus[status] as string;
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe(status);
      expect(await eventTypes(id)).toEqual([]);
    }
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: other } })).status).toBe("queued");
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirMessage } })).status).toBe("queued");
    const audits = await ctx.db.auditEvent.findMany({ where: { projectId: project.project.id } });
    expect(audits.map((a) => a.action)).toEqual(["message.bulk_action"]);
    expect(audits[0]?.details).toMatchObject({ action: "cancel", filter: { from }, matched: 5, changed: 2 });

    // Retry: only the failed message moves (the cancelled ones are final), and it is enqueued.
    const retryBody = { action: "retry", filter: { from, status: "failed" } };
    expect((await post("/v1/messages/actions", { ...retryBody, dryRun: true }, token)).json()).toEqual({
      matched: 1,
      changed: 1,
    });
    expect((await post("/v1/messages/actions", retryBody, token)).json()).toEqual({ matched: 1, changed: 1 });
    expect(await eventTypes(byStatus.failed as string)).toEqual(["message.retried"]);
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    expect((await queue.getJob(byStatus.failed as string))?.data).toMatchObject({
      messageId: byStatus.failed,
    });
    await queue.close();
    expect(
      await ctx.db.auditEvent.count({
        where: { projectId: project.project.id, action: "message.bulk_action" },
      }),
    ).toBe(2);
  });

  it("filters by recipient and time range", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-bulk-2" });
    const old = await insertMessage(ctx.db, project.project.id, {
      recipients: [{ address: "x@example.net" }],
      createdAt: new Date("2026-01-01T00:00:00Z"),
    });
    const recent = await insertMessage(ctx.db, project.project.id, {
      recipients: [{ address: "x@example.net" }],
    });
    await insertMessage(ctx.db, project.project.id, { recipients: [{ address: "y@example.net" }] });
    const response = await post(
      "/v1/messages/actions",
      { action: "cancel", filter: { to: "x@example.net", createdAfter: "2026-06-01T00:00:00Z" } },
      project.apiToken.token,
    );
    expect(response.json()).toEqual({ matched: 1, changed: 1 });
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: recent } })).status).toBe("cancelled");
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: old } })).status).toBe("queued");
  });

  it("refuses an unknown action and unknown filter fields, naming them", async () => {
    const resend = await post("/v1/messages/actions", { action: "resend", filter: {} });
    expect(resend.statusCode).toBe(400);
    expect(resend.json().error.message).toContain("action");
    const unknown = await post("/v1/messages/actions", { action: "cancel", filter: { subject: "x" } });
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().error.message).toContain("subject");
  });
});

describe("the same routes for operators under /admin/projects/:projectId", () => {
  const admin = (method: "GET" | "POST", url: string, payload?: unknown, token = ctx.config.adminToken) =>
    app.inject({ method, url, headers: bearer(token), payload: payload as object });

  it("lists, shows, reads events, retries, cancels and acts in bulk, audited as admin", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-admin" });
    const base = `/admin/projects/${project.project.id}`;
    const queued = await insertMessage(ctx.db, project.project.id, {
      status: "queued",
      mailFrom: "ops@example.com",
    });
    const failed = await insertMessage(ctx.db, project.project.id, {
      status: "failed",
      mailFrom: "ops@example.com",
    });

    const list = await admin("GET", `${base}/messages?from=ops@example.com`);
    expect(list.statusCode).toBe(200);
    expect(
      list
        .json()
        .items.map((m: { id: string }) => m.id)
        .sort(),
    ).toEqual([queued, failed].sort());
    expect((await admin("GET", `${base}/messages/${queued}`)).json().status).toBe("queued");

    expect((await admin("POST", `${base}/messages/${queued}/cancel`)).statusCode).toBe(202);
    expect((await admin("POST", `${base}/messages/${failed}/retry`)).statusCode).toBe(202);
    const events = (await admin("GET", `${base}/messages/${queued}/events`)).json();
    expect(events.items.map((e: { type: string }) => e.type)).toEqual(["message.cancelled"]);
    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: project.project.id },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => [a.action, a.actor])).toEqual([
      ["message.cancelled", "admin"],
      ["message.retried", "admin"],
    ]);

    const bulk = await admin("POST", `${base}/messages/actions`, {
      action: "cancel",
      filter: { from: "ops@example.com" },
    });
    expect(bulk.json()).toEqual({ matched: 2, changed: 1 });
    expect((await admin("GET", `${base}/events`)).json().items.length).toBeGreaterThanOrEqual(3);
  });

  it("is the operator's only: a project token is 401; an unknown project 404; another project's message 404", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config, { name: "lifecycle-admin-2" });
    const theirMessage = await insertMessage(ctx.db, theirs.project.id, { status: "queued" });
    const base = `/admin/projects/${project.project.id}`;
    expect((await admin("GET", `${base}/messages`, undefined, project.apiToken.token)).statusCode).toBe(401);
    expect((await admin("GET", `/admin/projects/${randomUUID()}/messages`)).statusCode).toBe(404);
    expect((await admin("GET", "/admin/projects/nope/messages")).statusCode).toBe(400);
    expect((await admin("POST", `${base}/messages/${theirMessage}/cancel`)).statusCode).toBe(404);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirMessage } })).status).toBe("queued");
  });
});
