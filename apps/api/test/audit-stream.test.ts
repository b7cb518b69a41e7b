import { recordAudit } from "@postern/audit";
import { createTestContext, type TestContext } from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
/** Two API processes' worth of servers over the same database: the stream must not depend on which one wrote. */
let apis: FastifyInstance[];
let urls: string[];

beforeAll(async () => {
  ctx = await createTestContext();
  apis = [];
  urls = [];
  for (let i = 0; i < 2; i++) {
    const app = await apiFor(ctx, { auditStream: { keepAliveMs: 200, pollIntervalMs: 100 } });
    urls.push(await app.listen({ host: "127.0.0.1", port: 0 }));
    apis.push(app);
  }
});
afterAll(async () => {
  for (const app of apis) await app.close();
  await ctx.close();
});

interface SseEvent {
  id?: string;
  event?: string;
  data?: string;
}

/** A minimal EventSource: collects parsed events and comment lines from a streaming fetch. */
function openStream(url: string, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const ready = fetch(url, {
    headers: { ...bearer(ctx.config.adminToken), ...headers },
    signal: controller.signal,
  }).then(async (response) => {
    const done = (async () => {
      const decoder = new TextDecoder();
      let buffer = "";
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let end = buffer.indexOf("\n\n");
          while (end >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event: SseEvent = {};
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) comments.push(line);
              const [field, ...rest] = line.split(": ");
              if (field === "id" || field === "event" || field === "data") event[field] = rest.join(": ");
            }
            if (event.data) events.push(event);
            end = buffer.indexOf("\n\n");
          }
        }
      } catch {
        // aborted by the test
      }
    })();
    return { response, done };
  });
  return { ready, events, comments, close: () => controller.abort() };
}

const audits = (events: SseEvent[]) => events.map((e) => JSON.parse(e.data as string));

describe("GET /admin/audit-logs/stream", () => {
  it("delivers an audit event written through one API process to streams on both within a second", async () => {
    const streams = urls.map((url) => openStream(`${url}/admin/audit-logs/stream`));
    for (const stream of streams) {
      const { response } = await stream.ready;
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    }
    // Let both streams take their starting point before the event is written.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const created = await fetch(`${urls[0]}/admin/projects`, {
      method: "POST",
      headers: { ...bearer(ctx.config.adminToken), "content-type": "application/json" },
      body: JSON.stringify({ name: "streamed", upstream: "smtp://mx.example.net" }),
    });
    expect(created.status).toBe(201);
    const project = (await created.json()) as { id: string; smtp: { password: string } };
    for (const stream of streams) {
      await expect
        .poll(() => audits(stream.events).map((e) => e.action), { timeout: 1000, interval: 50 })
        .toEqual(["project.created", "credential.created", "token.created"]);
      expect(stream.events.every((e) => e.event === "audit" && /^[0-9]+$/.test(e.id ?? ""))).toBe(true);
      expect(audits(stream.events)[0]).toMatchObject({ projectId: project.id, actor: "admin" });
      expect(stream.events.map((e) => e.data).join("")).not.toContain(project.smtp.password);
      // Keep-alive comments flow while nothing happens.
      await expect.poll(() => stream.comments.length, { timeout: 2000 }).toBeGreaterThan(0);
      stream.close();
    }
  });

  it("filters by project and action and resumes after Last-Event-ID", async () => {
    const first = await recordAudit(ctx.db, {
      action: "auth.failure",
      actor: "smtp:k",
      details: { reason: "bad_secret" },
    });
    const second = await recordAudit(ctx.db, { action: "auth.blocked", actor: "smtp:k" });
    const resumed = openStream(`${urls[1]}/admin/audit-logs/stream`, {
      "last-event-id": String(first.id - 1n),
    });
    const filtered = openStream(`${urls[0]}/admin/audit-logs/stream?action=auth.blocked`, {
      "last-event-id": String(first.id - 1n),
    });
    await expect
      .poll(() => resumed.events.map((e) => e.id), { timeout: 1000 })
      .toEqual([String(first.id), String(second.id)]);
    await expect.poll(() => filtered.events.map((e) => e.id), { timeout: 1000 }).toEqual([String(second.id)]);
    resumed.close();
    filtered.close();
  });

  it("ends open streams when the API closes, so that shutdown does not wait for clients", async () => {
    const app = await apiFor(ctx, { auditStream: { keepAliveMs: 200, pollIntervalMs: 100 } });
    const url = await app.listen({ host: "127.0.0.1", port: 0 });
    const stream = openStream(`${url}/admin/audit-logs/stream`);
    const { done } = await stream.ready;
    await app.close();
    await done;
    stream.close();
  });

  it("answers 400 for a malformed Last-Event-ID and an unknown action", async () => {
    const headers = bearer(ctx.config.adminToken);
    const badId = await apis[0]?.inject({
      method: "GET",
      url: "/admin/audit-logs/stream",
      headers: { ...headers, "last-event-id": "abc" },
    });
    expect(badId?.statusCode).toBe(400);
    expect(badId?.json().error.message).toContain("last-event-id");
    const badAction = await apis[0]?.inject({
      method: "GET",
      url: "/admin/audit-logs/stream?action=x",
      headers,
    });
    expect(badAction?.statusCode).toBe(400);
  });
});
