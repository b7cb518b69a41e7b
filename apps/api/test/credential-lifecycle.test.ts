import { Writable } from "node:stream";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createTestContext, type TestContext } from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
let app: FastifyInstance;
let smtp: RunningSmtp;
let logs = "";

beforeAll(async () => {
  ctx = await createTestContext({ SMTP_AUTH_FAILURES_PER_IP: "1000" });
  const destination = new Writable({
    write(chunk, _encoding, done) {
      logs += chunk.toString();
      done();
    },
  });
  const log = createLogger({ level: "debug" }, destination);
  app = await apiFor(ctx, { log });
  smtp = await startSmtp({ ...ctx, log, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
});
afterAll(async () => {
  await smtp?.stop();
  await app?.close();
  await ctx?.close();
});

function send(auth: { username: string; password: string }) {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp.ports.smtp,
    requireTLS: true,
    auth: { user: auth.username, pass: auth.password },
    tls: { rejectUnauthorized: false },
  });
  return transport
    .sendMail({ from: "app@acme.example", to: "someone@example.org", subject: "Hi", text: "Hello" })
    .then(
      (info) => ({ ok: true as const, response: info.response }),
      (error: { responseCode?: number; response?: string }) => ({
        ok: false as const,
        code: error.responseCode,
        response: error.response ?? "",
      }),
    )
    .finally(() => transport.close());
}

describe("a credential's life: created over /admin, used over SMTP, revoked", () => {
  it("authenticates with the returned credential, is refused after revocation, and never shows the secret again", async () => {
    const admin = bearer(ctx.config.adminToken);
    const created = await app.inject({
      method: "POST",
      url: "/admin/projects",
      headers: admin,
      payload: { name: "lifecycle", upstream: "smtp://127.0.0.1:1", senderDomains: ["acme.example"] },
    });
    expect(created.statusCode).toBe(201);
    const { id, smtp: credential, apiToken } = created.json();

    const accepted = await send(credential);
    expect(accepted).toMatchObject({ ok: true });
    const messageId = /queued as (\S+)/.exec(accepted.ok ? accepted.response : "")?.[1];
    // The id in the 250 reply is the REST API's message id.
    const message = await app.inject({
      method: "GET",
      url: `/v1/messages/${messageId}`,
      headers: bearer(apiToken.token),
    });
    expect(message.statusCode).toBe(200);
    expect(message.json()).toMatchObject({
      from: "app@acme.example",
      to: ["someone@example.org"],
      subject: "Hi",
    });

    const revoked = await app.inject({
      method: "DELETE",
      url: `/admin/projects/${id}/credentials/${credential.id}`,
      headers: admin,
    });
    expect(revoked.statusCode).toBe(200);
    // The SMTP node cached the successful verification; the revocation must reach it at once.
    const refused = await send(credential);
    expect(refused).toMatchObject({ ok: false, code: 535 });
    expect(refused.ok ? "" : refused.response).toMatch(/^535 5\.7\.8/);

    // The secret was in the creating response only: not in later answers, the audit log or any log line.
    const shown = await app.inject({ method: "GET", url: `/admin/projects/${id}`, headers: admin });
    const trail = await app.inject({
      method: "GET",
      url: `/admin/audit-logs?projectId=${id}&limit=200`,
      headers: admin,
    });
    expect(trail.json().items.map((e: { action: string }) => e.action)).toEqual(
      expect.arrayContaining(["project.created", "credential.created", "auth.success", "credential.revoked"]),
    );
    for (const text of [shown.body, trail.body, message.body, logs]) {
      expect(text).not.toContain(credential.password);
      expect(text).not.toContain(apiToken.token);
    }
  });
});
