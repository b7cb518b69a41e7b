import { MessageStatus } from "@postern/db";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor } from "./api-helpers";

/**
 * `GET|PUT /v1/rules` and the operator's routes over real HTTP, and HTTP submission judged by the
 * same rules as SMTP (docs/rules.md).
 */

const heldExists = Object.values(MessageStatus).includes("held" as MessageStatus);

let ctx: TestContext;
let app: FastifyInstance;
let base: string;

beforeAll(async () => {
  ctx = await createTestContext();
  app = await apiFor(ctx);
  base = await app.listen({ port: 0, host: "127.0.0.1" });
}, 60_000);
afterAll(async () => {
  await app?.close();
  await ctx?.close();
});

async function call(
  method: string,
  path: string,
  token: string,
  body?: unknown,
  contentType = "application/json",
) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": contentType }),
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

const project = () => createProjectFixture(ctx.db, ctx.config, { senderDomains: ["app.test"] });

describe("GET|PUT /v1/rules", () => {
  it("reads version 0 with no rules, replaces them with version 1, audits the change", async () => {
    const fixture = await project();
    const token = fixture.apiToken.token;
    expect(await call("GET", "/v1/rules", token)).toEqual({ status: 200, body: { version: 0, rules: [] } });
    const rules = [
      { name: "no-exe", match: { attachmentExtensions: ["EXE"] }, action: "deny" },
      { name: "review", match: { to: "*@new.test", subject: "launch" }, action: "hold" },
    ];
    const put = await call("PUT", "/v1/rules", token, { version: 0, rules });
    expect(put.status).toBe(200);
    expect(put.body.version).toBe(1);
    expect(put.body.rules[0].match.attachmentExtensions).toEqual(["EXE"]);
    expect((await call("GET", "/v1/rules", token)).body).toEqual(put.body);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: fixture.project.id, action: "rules.updated" },
    });
    expect(audit.actor).toBe(`token:${fixture.apiToken.id}`);
    expect(audit.details).toEqual({
      version: 1,
      rules: [
        { name: "no-exe", action: "deny" },
        { name: "review", action: "hold" },
      ],
    });
  });

  it("a stale version is 409 rules_version_conflict naming the current one, and changes nothing", async () => {
    const fixture = await project();
    const token = fixture.apiToken.token;
    const first = { version: 0, rules: [{ name: "a", match: { to: "*@a.test" }, action: "deny" }] };
    expect((await call("PUT", "/v1/rules", token, first)).status).toBe(200);
    const stale = await call("PUT", "/v1/rules", token, { version: 0, rules: [] });
    expect(stale.status).toBe(409);
    expect(stale.body.error.code).toBe("rules_version_conflict");
    expect(stale.body.error.message).toContain("version 1");
    expect((await call("GET", "/v1/rules", token)).body).toMatchObject({ version: 1, rules: first.rules });
  });

  it("two changes of the same version at once: one wins, the other is 409", async () => {
    const fixture = await project();
    const token = fixture.apiToken.token;
    const change = (name: string) =>
      call("PUT", "/v1/rules", token, { version: 0, rules: [{ name, match: {}, action: "allow" }] });
    const results = await Promise.all([change("one"), change("two"), change("three")]);
    expect(results.map((r) => r.status).sort()).toEqual([200, 409, 409]);
    expect((await call("GET", "/v1/rules", token)).body.version).toBe(1);
  });

  it.each([
    [{ version: 0, rules: [{ name: "x", match: { to: "a b@c.test" }, action: "deny" }] }, "rules.0.match.to"],
    [{ version: 0, rules: [{ name: "x", match: { regex: ".*" }, action: "deny" }] }, "rules.0.match"],
    [{ version: 0, rules: [{ name: "x", match: {}, action: "bounce" }] }, "rules.0.action"],
    [{ version: 0, rules: [{ name: 'say "hi"', match: {}, action: "deny" }] }, "rules.0.name"],
    [{ rules: [] }, "version"],
  ])("invalid rules are 422 invalid_rules naming the field (%#)", async (body, field) => {
    const fixture = await project();
    const put = await call("PUT", "/v1/rules", fixture.apiToken.token, body);
    expect(put.status).toBe(422);
    expect(put.body.error.code).toBe("invalid_rules");
    expect(put.body.error.message.startsWith(`${field}:`)).toBe(true);
  });

  it("operators read and change any project's rules under /admin/projects/:id; each project sees its own", async () => {
    const fixture = await project();
    const other = await project();
    const admin = ctx.config.adminToken;
    const path = `/admin/projects/${fixture.project.id}/rules`;
    const put = await call("PUT", path, admin, {
      version: 0,
      rules: [{ name: "all", match: {}, action: "hold" }],
    });
    expect(put).toMatchObject({ status: 200, body: { version: 1 } });
    expect((await call("GET", path, admin)).body.rules[0].name).toBe("all");
    expect((await call("GET", "/v1/rules", fixture.apiToken.token)).body.version).toBe(1);
    expect((await call("GET", "/v1/rules", other.apiToken.token)).body).toEqual({ version: 0, rules: [] });
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: fixture.project.id, action: "rules.updated" },
    });
    expect(audit.actor).toBe("admin");
    expect(
      (await call("GET", `/admin/projects/00000000-0000-7000-8000-000000000000/rules`, admin)).status,
    ).toBe(404);
    expect((await call("GET", path, fixture.apiToken.token)).status).toBe(401);
  });
});

describe("HTTP submission judged by the rules", () => {
  let fixture: ProjectFixture;
  beforeAll(async () => {
    fixture = await project();
    const put = await call("PUT", "/v1/rules", fixture.apiToken.token, {
      version: 0,
      rules: [
        { name: "no-competitor", match: { to: "*@competitor.test" }, action: "deny" },
        { name: "no-executables", match: { attachmentExtensions: [".exe"] }, action: "deny" },
        { name: "review-launch", match: { subject: "launch" }, action: "hold" },
      ],
    });
    expect(put.status).toBe(200);
  });

  const json = (overrides: Record<string, unknown> = {}) => ({
    from: "app@app.test",
    to: ["user@customer.test"],
    subject: "Hello",
    text: "Hi.",
    ...overrides,
  });
  const storedCount = () => ctx.db.message.count({ where: { projectId: fixture.project.id } });

  it("an envelope rule denying a recipient: 403 rule_denied naming the rule, nothing stored", async () => {
    const before = await storedCount();
    const sent = await call(
      "POST",
      "/v1/messages",
      fixture.apiToken.token,
      json({ to: ["a@x.test", "b@competitor.test"] }),
    );
    expect(sent.status).toBe(403);
    expect(sent.body.error.code).toBe("rule_denied");
    expect(sent.body.error.message).toContain('rule "no-competitor"');
    expect(await storedCount()).toBe(before);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: fixture.project.id, action: "message.rejected" },
      orderBy: { id: "desc" },
    });
    expect(audit.details).toMatchObject({ reason: "rule", rule: "no-competitor", via: "http" });
  });

  it("an attachment rule on composed JSON: 403", async () => {
    const before = await storedCount();
    const sent = await call(
      "POST",
      "/v1/messages",
      fixture.apiToken.token,
      json({
        attachments: [
          {
            filename: "setup.EXE",
            contentType: "application/octet-stream",
            content: Buffer.from("MZ").toString("base64"),
          },
        ],
      }),
    );
    expect(sent.status).toBe(403);
    expect(sent.body.error.message).toContain('rule "no-executables"');
    expect(await storedCount()).toBe(before);
  });

  it("an attachment nested two levels down in a raw message/rfc822: 403", async () => {
    const raw = [
      "From: app@app.test",
      "To: user@customer.test",
      "Subject: Files",
      'Content-Type: multipart/mixed; boundary="a"',
      "",
      "--a",
      'Content-Type: multipart/related; boundary="b"',
      "",
      "--b",
      'Content-Type: multipart/mixed; boundary="c"',
      "",
      "--c",
      'Content-Type: application/x-msdownload; name="tool.exe"',
      "",
      "MZ",
      "--c--",
      "--b--",
      "--a--",
      "",
    ].join("\r\n");
    const sent = await call(
      "POST",
      "/v1/messages?from=app@app.test&to=user@customer.test",
      fixture.apiToken.token,
      raw,
      "message/rfc822",
    );
    expect(sent.status).toBe(403);
    expect(sent.body.error.message).toContain('rule "no-executables"');
  });

  it("no rule holding: 202 and stored", async () => {
    const sent = await call("POST", "/v1/messages", fixture.apiToken.token, json());
    expect(sent.status).toBe(202);
    const message = await ctx.db.message.findUniqueOrThrow({ where: { id: sent.body.id } });
    expect(message.status).toBe("queued");
  });

  it("hold: 202 and stored (as held once the held status exists)", async () => {
    const sent = await call("POST", "/v1/messages", fixture.apiToken.token, json({ subject: "Our LAUNCH" }));
    expect(sent.status).toBe(202);
    const message = await ctx.db.message.findUniqueOrThrow({ where: { id: sent.body.id } });
    if (heldExists) expect(message.status).toBe("held");
  });

  it("a change takes effect on the next submission", async () => {
    const other = await project();
    const token = other.apiToken.token;
    expect((await call("POST", "/v1/messages", token, json())).status).toBe(202);
    const put = await call("PUT", "/v1/rules", token, {
      version: 0,
      rules: [{ name: "stop-all", match: {}, action: "deny" }],
    });
    expect(put.status).toBe(200);
    // The API's cache is dropped by the change's publication on Redis (its TTL is 30 s).
    await expect
      .poll(async () => (await call("POST", "/v1/messages", token, json())).status, {
        timeout: 5_000,
        interval: 50,
      })
      .toBe(403);
  });
});
