import { buildApi } from "@postern/api";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
  TestDnsServer,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let dns: TestDnsServer;
let ctx: TestContext;
let smtp: RunningSmtp;
let api: FastifyInstance;
let fixture: ProjectFixture;

beforeAll(async () => {
  dns = await TestDnsServer.start();
  ctx = await createTestContext({ DNS_SERVERS: dns.address });
  smtp = await startSmtp(
    { ...ctx, log: createLogger({ level: "silent" }), metrics: createMetricsRegistry() },
    { smtpPort: 0, smtpsPort: 0 },
  );
  api = await buildApi({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(async () => {
  await smtp?.stop();
  await api?.close();
  await ctx?.close();
  await dns?.stop();
});

/** The SMTP reply to a message from `from`, as "code enhanced" ("250 2.0.0" when accepted). */
async function smtpReply(from: string): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtp.ports.smtp,
    requireTLS: true,
    auth: { user: fixture.smtp.username, pass: fixture.smtp.password },
    tls: { rejectUnauthorized: false },
  });
  try {
    const sent = await transport.sendMail({ from, to: "someone@example.org", subject: "Hi", text: "Hi" });
    return sent.response.slice(0, 9);
  } catch (error) {
    return ((error as { response?: string }).response ?? String(error)).slice(0, 9);
  } finally {
    transport.close();
  }
}

async function httpCode(from: string): Promise<string> {
  const answer = await api.inject({
    method: "POST",
    url: "/v1/messages",
    headers: { authorization: `Bearer ${fixture.apiToken.token}` },
    payload: { from, to: ["someone@example.org"], subject: "Hi", text: "Hi" },
  });
  return answer.statusCode === 202 ? "202" : `${answer.statusCode} ${answer.json().error.code}`;
}

const asProject = (method: "POST" | "PATCH", url: string, payload?: object) =>
  api.inject({
    method,
    url,
    headers: { authorization: `Bearer ${fixture.apiToken.token}` },
    ...(payload ? { payload } : {}),
  });

describe("requireVerifiedDomain", () => {
  it("refuses a From domain that is not verified (553 5.7.1 after DATA, 403 over HTTP) until a verify finds its key", async () => {
    // Off by default: any From is accepted.
    expect(await smtpReply("app@signed.example")).toBe("250 2.0.0");

    const patched = await api.inject({
      method: "PATCH",
      url: `/admin/projects/${fixture.project.id}`,
      headers: { authorization: `Bearer ${ctx.config.adminToken}` },
      payload: { requireVerifiedDomain: true },
    });
    expect(patched.statusCode).toBe(200);
    expect(patched.json().requireVerifiedDomain).toBe(true);

    expect(await smtpReply("app@signed.example")).toBe("553 5.7.1");
    expect(await httpCode("app@signed.example")).toBe("403 domain_not_verified");
    // Refusal audits are written off the reply path, a few milliseconds later.
    let rejected = null;
    for (let i = 0; i < 100 && !rejected; i++) {
      rejected = await ctx.db.auditEvent.findFirst({
        where: { projectId: fixture.project.id, action: "message.rejected" },
      });
      if (!rejected) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(rejected?.details).toMatchObject({
      reason: "header_from_unverified",
      headerFrom: "app@signed.example",
    });

    // A domain whose key is still pending does not count.
    const created = (await asProject("POST", "/v1/domains", { domain: "signed.example" })).json();
    expect(await smtpReply("app@signed.example")).toBe("553 5.7.1");

    for (const record of created.records) dns.setTxt(record.name, [record.value]);
    const verified = (await asProject("POST", `/v1/domains/${created.id}/verify`)).json();
    expect(verified.verified).toBe(true);

    // The verify dropped the project's cached policy on the SMTP and API nodes.
    expect(await smtpReply("app@signed.example")).toBe("250 2.0.0");
    expect(await smtpReply("app@news.signed.example")).toBe("250 2.0.0");
    expect(await httpCode("app@signed.example")).toBe("202");
    expect(await smtpReply("app@other.example")).toBe("553 5.7.1");
    expect(await httpCode("app@other.example")).toBe("403 domain_not_verified");
  });
});
