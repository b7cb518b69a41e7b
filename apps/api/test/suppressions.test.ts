import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { startWorker } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

/**
 * `/v1/suppressions` and `/admin/projects/:projectId/suppressions` (docs/suppressions.md), and
 * what HTTP submission does with a suppressed recipient: left out, with a `message.suppressed`
 * event, the others delivered by the real worker to an SMTP sink.
 */

let ctx: TestContext;
let app: FastifyInstance;
let sink: SmtpSink;
let worker: Awaited<ReturnType<typeof startWorker>>;
let mine: ProjectFixture;
let theirs: ProjectFixture;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  sink = await SmtpSink.start();
  worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "suppr-mine", upstream: sink.url });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "suppr-theirs", upstream: sink.url });
}, 60_000);
afterAll(async () => {
  await app?.close();
  await worker?.stop();
  await sink?.stop();
  await ctx?.close();
});

const as = (fixture: ProjectFixture) => bearer(fixture.apiToken.token);
const get = (url: string, headers = as(mine)) => app.inject({ method: "GET", url, headers });
const post = (url: string, payload: unknown, headers = as(mine)) =>
  app.inject({ method: "POST", url, headers, payload: payload as object });
const del = (url: string, headers = as(mine)) => app.inject({ method: "DELETE", url, headers });

describe("/v1/suppressions", () => {
  it("adds (201, lower-cased), lists with q and pages, removes (204), audited; another project sees none", async () => {
    const added = await post("/v1/suppressions", {
      address: "Gone@Example.NET",
      reason: "hard_bounce",
    });
    expect(added.statusCode).toBe(201);
    expect(added.json()).toMatchObject({
      address: "gone@example.net",
      reason: "hard_bounce",
      expiresAt: null,
      sourceMessageId: null,
    });
    expect((await post("/v1/suppressions", { address: "*@alpha.example" })).json()).toMatchObject({
      address: "*@alpha.example",
      reason: "manual",
    });
    const until = new Date(Date.now() + 86_400_000).toISOString();
    expect(
      (
        await post("/v1/suppressions", {
          address: "later@example.net",
          reason: "unsubscribe",
          expiresAt: until,
        })
      ).statusCode,
    ).toBe(201);

    const all = (await get("/v1/suppressions")).json();
    expect(all.items.map((s: { address: string }) => s.address)).toEqual([
      "*@alpha.example",
      "gone@example.net",
      "later@example.net",
    ]);
    expect(all.items[2].expiresAt).toBe(until);
    const found = (await get("/v1/suppressions?q=GONE")).json();
    expect(found.items.map((s: { address: string }) => s.address)).toEqual(["gone@example.net"]);
    const first = (await get("/v1/suppressions?limit=2")).json();
    expect(first.items).toHaveLength(2);
    const second = (
      await get(`/v1/suppressions?limit=2&cursor=${encodeURIComponent(first.nextCursor)}`)
    ).json();
    expect(second).toMatchObject({ items: [{ address: "later@example.net" }], nextCursor: null });

    // Another project: none of them, and cannot remove them.
    expect((await get("/v1/suppressions", as(theirs))).json()).toEqual({ items: [], nextCursor: null });
    expect((await del("/v1/suppressions/gone@example.net", as(theirs))).statusCode).toBe(404);

    expect((await del("/v1/suppressions/GONE@example.net")).statusCode).toBe(204);
    const again = await del("/v1/suppressions/gone@example.net");
    expect(again.statusCode).toBe(404);
    expect(again.json().error.code).toBe("not_found");

    const audit = await ctx.db.auditEvent.findMany({
      where: { projectId: mine.project.id, action: { in: ["suppression.added", "suppression.removed"] } },
      orderBy: { id: "asc" },
    });
    expect(audit.map((a) => a.action)).toEqual([
      "suppression.added",
      "suppression.added",
      "suppression.added",
      "suppression.removed",
    ]);
    expect(audit[3]?.details).toEqual({ address: "gone@example.net" });
    expect(audit[0]?.actor).toBe(`token:${mine.apiToken.id}`);

    await del("/v1/suppressions/*@alpha.example");
    await del("/v1/suppressions/later@example.net");
  });

  it("refuses what is not an address, a domain pattern other than *@domain, an unknown reason", async () => {
    for (const body of [
      { address: "not an address" },
      { address: "a*b@example.net" },
      { address: "*@*.example.net" },
      { address: "x@example.net", reason: "because" },
      { address: "x@example.net", expiresAt: "tomorrow" },
    ]) {
      const response = await post("/v1/suppressions", body);
      expect(response.statusCode, JSON.stringify(body)).toBe(400);
      expect(response.json().error).toMatchObject({ code: "validation_error" });
    }
  });

  it("is the same under /admin/projects/:projectId for the operator", async () => {
    const admin = bearer(ctx.config.adminToken);
    const url = `/admin/projects/${theirs.project.id}/suppressions`;
    expect((await post(url, { address: "op@example.net", reason: "complaint" }, admin)).statusCode).toBe(201);
    expect((await get("/v1/suppressions", as(theirs))).json().items).toMatchObject([
      { address: "op@example.net", reason: "complaint" },
    ]);
    expect((await get(url, admin)).json().items).toHaveLength(1);
    expect((await del(`${url}/op@example.net`, admin)).statusCode).toBe(204);
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: theirs.project.id, action: "suppression.removed" },
    });
    expect(audit?.actor).toBe("admin");
    const unknown = "00000000-0000-7000-8000-000000000000";
    expect((await get(`/admin/projects/${unknown}/suppressions`, admin)).statusCode).toBe(404);
  });
});

describe("HTTP submission and suppressions", () => {
  const message = (to: string[]) => ({
    from: "app@example.com",
    to,
    subject: "Suppressed?",
    text: "Hello.",
  });
  const submit = (to: string[]) =>
    app.inject({
      method: "POST",
      url: "/v1/messages",
      headers: { ...as(mine), "content-type": "application/json" },
      payload: JSON.stringify(message(to)),
    });

  it("leaves a suppressed recipient out with a message.suppressed event; the others are delivered", async () => {
    expect(
      (await post("/v1/suppressions", { address: "blocked@example.org", reason: "complaint" })).statusCode,
    ).toBe(201);
    expect((await post("/v1/suppressions", { address: "*@dead.example" })).statusCode).toBe(201);
    // Expired: ignored.
    expect(
      (
        await post("/v1/suppressions", {
          address: "expired@example.org",
          reason: "hard_bounce",
          expiresAt: new Date(Date.now() - 1000).toISOString(),
        })
      ).statusCode,
    ).toBe(201);

    const response = await submit([
      "ok@example.org",
      "Blocked@example.org",
      "anyone@dead.example",
      "expired@example.org",
    ]);
    expect(response.statusCode).toBe(202);
    const id = response.json().id as string;
    const recipients = await ctx.db.messageRecipient.findMany({
      where: { messageId: id },
      orderBy: { address: "asc" },
    });
    expect(recipients.map((r) => r.address)).toEqual(["expired@example.org", "ok@example.org"]);
    const events = await ctx.db.messageEvent.findMany({ where: { messageId: id }, orderBy: { id: "asc" } });
    expect(events.map((e) => e.type).slice(0, 2)).toEqual(["message.accepted", "message.suppressed"]);
    expect(events[1]?.data).toEqual({
      recipients: [
        expect.objectContaining({
          address: "Blocked@example.org",
          status: "suppressed",
          code: 550,
          enhancedCode: "5.7.1",
          reason: "complaint",
          suppression: "blocked@example.org",
        }),
        expect.objectContaining({
          address: "anyone@dead.example",
          reason: "manual",
          suppression: "*@dead.example",
        }),
      ],
    });
    await expect
      .poll(async () => (await ctx.db.message.findUnique({ where: { id } }))?.status, { timeout: 20_000 })
      .toBe("delivered");
    const received = sink.messages.find((m) => m.raw.includes(`id ${id}`));
    expect(received?.rcptTo.sort()).toEqual(["expired@example.org", "ok@example.org"]);
    // GET /v1/events shows it to the project.
    await expect
      .poll(async () =>
        (await get("/v1/events?type=message.suppressed"))
          .json()
          .items.map((e: { messageId: string }) => e.messageId),
      )
      .toContain(id);
  });

  it("refuses a submission whose every recipient is suppressed with 422 recipients_suppressed, storing nothing", async () => {
    const before = await ctx.db.message.count({ where: { projectId: mine.project.id } });
    const response = await submit(["blocked@example.org", "x@dead.example"]);
    expect(response.statusCode).toBe(422);
    expect(response.json().error.code).toBe("recipients_suppressed");
    expect(response.json().error.message).toContain("blocked@example.org (complaint)");
    expect(await ctx.db.message.count({ where: { projectId: mine.project.id } })).toBe(before);
    const rejected = await ctx.db.auditEvent.findFirst({
      where: { projectId: mine.project.id, action: "message.rejected" },
      orderBy: { id: "desc" },
    });
    expect(rejected?.details).toMatchObject({ reason: "suppressed", via: "http" });
  });

  it("a suppression removed is seen by the next submission", async () => {
    expect((await del("/v1/suppressions/blocked@example.org")).statusCode).toBe(204);
    const response = await submit(["blocked@example.org"]);
    expect(response.statusCode).toBe(202);
  });
});

describe("autoSuppress", () => {
  it("is on by default, shown by GET /v1/project, and set by PATCH /admin/projects/:id", async () => {
    expect((await get("/v1/project")).json().autoSuppress).toBe(true);
    const admin = bearer(ctx.config.adminToken);
    const patched = await app.inject({
      method: "PATCH",
      url: `/admin/projects/${mine.project.id}`,
      headers: admin,
      payload: { autoSuppress: false },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.json().autoSuppress).toBe(false);
    expect((await get("/v1/project")).json().autoSuppress).toBe(false);
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: mine.project.id, action: "project.updated" },
      orderBy: { id: "desc" },
    });
    expect(audit?.details).toMatchObject({ autoSuppress: false });
  });
});
