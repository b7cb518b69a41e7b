import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "../../smtp/test/smtp-client";
import { apiFor, bearer } from "./api-helpers";

/**
 * Duplicate suppression of HTTP submission (docs/rules.md, Duplicates): within the project's
 * `dedupWindowSeconds`, a resubmission answers 202 with the first message's id and stores nothing.
 */

let ctx: TestContext;
/** Two API processes' worth of state over one database: nothing of a submission is kept in memory. */
let app: FastifyInstance;
let otherApp: FastifyInstance;
let smtp: RunningSmtp;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  otherApp = await apiFor(ctx);
  smtp = await startSmtp(
    { ...ctx, log: createLogger({ level: "silent" }), metrics: createMetricsRegistry() },
    { smtpPort: 0, smtpsPort: 0 },
  );
}, 60_000);
afterAll(async () => {
  await app?.close();
  await otherApp?.close();
  await smtp?.stop();
  await ctx?.close();
});

async function project(dedupWindowSeconds: number) {
  const fixture = await createProjectFixture(ctx.db, ctx.config);
  await ctx.db.project.update({ where: { id: fixture.project.id }, data: { dedupWindowSeconds } });
  return fixture;
}

const jsonMessage = {
  from: "App <app@example.com>",
  to: ["user@example.net"],
  subject: "Your receipt",
  text: "Thank you.",
};

function postJson(fixture: ProjectFixture, body: unknown, server = app) {
  return server.inject({
    method: "POST",
    url: "/v1/messages",
    headers: { ...bearer(fixture.apiToken.token), "content-type": "application/json" },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const rawMessage =
  "From: app@example.com\r\nSubject: Raw\r\nMessage-ID: <raw-1@example.com>\r\n\r\nHello.\r\n";

function postRaw(
  fixture: ProjectFixture,
  raw: string,
  options: { server?: FastifyInstance; key?: string } = {},
) {
  return (options.server ?? app).inject({
    method: "POST",
    url: "/v1/messages?from=app@example.com&to=user@example.net",
    headers: {
      ...bearer(fixture.apiToken.token),
      "content-type": "message/rfc822",
      ...(options.key ? { "idempotency-key": options.key } : {}),
    },
    payload: Buffer.from(raw),
  });
}

function acceptedId(response: { statusCode: number; json(): { id: string } }): string {
  expect(response.statusCode).toBe(202);
  return response.json().id;
}

const storedIds = async (projectId: string) =>
  (await ctx.db.message.findMany({ where: { projectId }, orderBy: { id: "asc" }, select: { id: true } })).map(
    (m) => m.id,
  );

describe("POST /v1/messages within the window", () => {
  it("JSON: the same request again, to another API process, answers 202 with the first id and stores nothing", async () => {
    const fixture = await project(3600);
    const first = acceptedId(await postJson(fixture, jsonMessage));
    expect(acceptedId(await postJson(fixture, jsonMessage, otherApp))).toBe(first);
    // The same fields in another order are the same request.
    const reordered = Object.fromEntries(Object.entries(jsonMessage).reverse());
    expect(acceptedId(await postJson(fixture, reordered))).toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first]);
    const duplicates = await ctx.db.auditEvent.findMany({
      where: { projectId: fixture.project.id, action: "message.duplicate" },
    });
    expect(duplicates.map((a) => [a.actor, (a.details as { messageId: string }).messageId])).toEqual([
      [`token:${fixture.apiToken.id}`, first],
      [`token:${fixture.apiToken.id}`, first],
    ]);
  });

  it("JSON: another text or another recipient is another message", async () => {
    const fixture = await project(3600);
    const ids = [
      acceptedId(await postJson(fixture, jsonMessage)),
      acceptedId(await postJson(fixture, { ...jsonMessage, text: "Thank you!" })),
      acceptedId(await postJson(fixture, { ...jsonMessage, to: ["other@example.net"] })),
    ];
    expect(new Set(ids).size).toBe(3);
    expect((await storedIds(fixture.project.id)).length).toBe(3);
  });

  it("raw: the bytes a client first sent over SMTP (dot-stuffed there) are the same submission", async () => {
    const fixture = await project(3600);
    const content = "From: app@example.com\r\nSubject: Dots\r\n\r\n.hidden line\r\n.\r\nend\r\n";
    const { client } = await RawSmtp.session(smtp.ports.smtp, fixture.smtp);
    await client.command("MAIL FROM:<app@example.com>");
    await client.command("RCPT TO:<user@example.net>");
    await client.command("DATA");
    // RFC 5321 4.5.2: a line that starts with a dot gets another one on the wire.
    const reply = await client.command(`${content.replace(/^\./gm, "..")}.`);
    client.close();
    const first = /queued as (\S+)$/.exec(reply.text)?.[1];
    expect(reply.code).toBe(250);
    expect(acceptedId(await postRaw(fixture, content))).toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first]);
  });

  it("raw: ten identical requests at once over two API processes store one message, all answered its id", async () => {
    const fixture = await project(3600);
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => postRaw(fixture, rawMessage, { server: i % 2 ? otherApp : app })),
    );
    const ids = responses.map(acceptedId);
    const stored = await storedIds(fixture.project.id);
    expect(stored.length).toBe(1);
    expect(new Set(ids)).toEqual(new Set(stored));
  });

  it("raw: a new Idempotency-Key does not make a resubmission a new message", async () => {
    const fixture = await project(3600);
    const first = acceptedId(await postRaw(fixture, rawMessage, { key: "a" }));
    expect(acceptedId(await postRaw(fixture, rawMessage, { key: "b" }))).toBe(first);
    expect(await storedIds(fixture.project.id)).toEqual([first]);
  });
});

describe("POST /v1/messages without a window", () => {
  it("stores every submission when dedupWindowSeconds is 0", async () => {
    const fixture = await project(0);
    const ids = [
      acceptedId(await postRaw(fixture, rawMessage)),
      acceptedId(await postRaw(fixture, rawMessage)),
      acceptedId(await postJson(fixture, jsonMessage)),
      acceptedId(await postJson(fixture, jsonMessage)),
    ];
    expect(new Set(ids).size).toBe(4);
    expect((await storedIds(fixture.project.id)).length).toBe(4);
  });
});
