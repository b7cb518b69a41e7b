import { generateKeyPairSync, randomUUID } from "node:crypto";
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

let dns: TestDnsServer;
let ctx: TestContext;
let app: FastifyInstance;
let mine: ProjectFixture;
let theirs: ProjectFixture;

beforeAll(async () => {
  dns = await TestDnsServer.start();
  ctx = await createTestContext({ DNS_SERVERS: dns.address });
  app = await apiFor(ctx);
  mine = await createProjectFixture(ctx.db, ctx.config, { name: "mine" });
  theirs = await createProjectFixture(ctx.db, ctx.config, { name: "theirs" });
});
afterAll(async () => {
  await app?.close();
  await ctx?.close();
  await dns?.stop();
});

const call = (method: "GET" | "POST" | "DELETE", url: string, body?: object, token = mine.apiToken.token) =>
  app.inject({ method, url, headers: bearer(token), ...(body ? { payload: body } : {}) });

interface Rec {
  purpose: string;
  name: string;
  value: string;
  state?: string;
}
const recordOf = (records: Rec[], purpose: string) => records.find((r) => r.purpose === purpose) as Rec;

describe("/v1/domains", () => {
  it("creates a domain with an RSA-2048 key and answers the records to publish, never the private key", async () => {
    const created = await call("POST", "/v1/domains", { domain: "Mail.Example.com" });
    expect(created.statusCode).toBe(201);
    const body = created.json();
    expect(body).toMatchObject({
      domain: "mail.example.com",
      verified: false,
      keys: [{ selector: "pst1", algorithm: "rsa", status: "pending" }],
    });
    const dkim = recordOf(body.records, "dkim");
    expect(dkim).toMatchObject({ type: "TXT", name: "pst1._domainkey.mail.example.com" });
    const p = /p=([A-Za-z0-9+/=]+)$/.exec(dkim.value)?.[1] as string;
    // A 2048-bit RSA SubjectPublicKeyInfo is 294 bytes.
    expect(Buffer.from(p, "base64")).toHaveLength(294);
    expect(recordOf(body.records, "spf")).toMatchObject({
      name: "mail.example.com",
      value: "v=spf1 a:postern.test ~all",
    });
    expect(recordOf(body.records, "dmarc")).toMatchObject({ name: "_dmarc.mail.example.com" });
    expect(created.body).not.toMatch(/PRIVATE KEY|privateKey/);
    const stored = await ctx.db.dkimKey.findFirstOrThrow({ where: { domainId: body.id } });
    expect(stored.privateKeySealed).toMatch(/^v1\./);

    const list = await call("GET", "/v1/domains");
    expect(list.json().items.map((d: { id: string }) => d.id)).toContain(body.id);
    expect((await call("GET", `/v1/domains/${body.id}`)).json()).toMatchObject({
      id: body.id,
      records: body.records,
    });
    expect((await call("POST", "/v1/domains", { domain: "mail.example.com" })).json().error.code).toBe(
      "domain_exists",
    );

    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: mine.project.id, action: "domain.created" },
    });
    expect(audit.details).toMatchObject({
      domainId: body.id,
      domain: "mail.example.com",
      selector: "pst1",
      algorithm: "rsa",
    });
    expect(JSON.stringify(audit.details)).not.toMatch(/PRIVATE/);
  });

  it("creates Ed25519 keys on request and imports a PEM key; refuses bad input naming the field", async () => {
    const ed = await call("POST", "/v1/domains", { domain: "ed.example.com", algorithm: "ed25519" });
    expect(ed.statusCode).toBe(201);
    const p = /p=(\S+)$/.exec(recordOf(ed.json().records, "dkim").value)?.[1] as string;
    expect(recordOf(ed.json().records, "dkim").value).toMatch(/^v=DKIM1; k=ed25519; p=/);
    expect(Buffer.from(p, "base64")).toHaveLength(32);

    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = privateKey.export({ type: "pkcs1", format: "pem" }).toString();
    const imported = await call("POST", "/v1/domains", { domain: "imported.example.com", privateKey: pem });
    expect(imported.statusCode).toBe(201);
    const spki = publicKey.export({ type: "spki", format: "der" }).toString("base64");
    expect(recordOf(imported.json().records, "dkim").value).toBe(`v=DKIM1; k=rsa; p=${spki}`);
    expect(imported.body).not.toContain(pem.split("\n")[1]);

    const garbage = await call("POST", "/v1/domains", { domain: "bad.example.com", privateKey: "not a key" });
    expect(garbage.statusCode).toBe(422);
    expect(garbage.json().error).toMatchObject({
      code: "invalid_key",
      message: expect.stringContaining("privateKey"),
    });
    const small = generateKeyPairSync("rsa", { modulusLength: 512 }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    expect(
      (await call("POST", "/v1/domains", { domain: "bad.example.com", privateKey: small })).json().error
        .message,
    ).toMatch(/512 bits/);
    const mismatch = await call("POST", "/v1/domains", {
      domain: "bad.example.com",
      privateKey: pem,
      algorithm: "ed25519",
    });
    expect(mismatch.json().error.code).toBe("invalid_key");
    const badName = await call("POST", "/v1/domains", { domain: "not a domain" });
    expect(badName.statusCode).toBe(400);
    expect(badName.json().error.message).toMatch(/^body\.domain/);
  });

  it("verify reports each record missing, wrong or ok as DNS has it; the key becomes active when its record is found", async () => {
    const created = (await call("POST", "/v1/domains", { domain: "verify.example.com" })).json();
    const dkim = recordOf(created.records, "dkim");
    const url = `/v1/domains/${created.id}/verify`;

    const missing = await call("POST", url);
    expect(missing.statusCode).toBe(200);
    expect(missing.json().records.map((r: Rec) => [r.purpose, r.state])).toEqual([
      ["dkim", "missing"],
      ["spf", "missing"],
      ["dmarc", "missing"],
    ]);
    expect(missing.json()).toMatchObject({ verified: false, activated: [] });

    // Another key's record (e.g. a stale one) at the selector: wrong, and the key stays pending.
    const other = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({
      type: "spki",
      format: "der",
    });
    dns.setTxt(dkim.name, [`v=DKIM1; k=rsa; p=${other.toString("base64")}`]);
    dns.setTxt("verify.example.com", [
      "v=spf1 -all",
      "v=spf1 include:a.example ~all",
      "google-site-verification=x",
    ]);
    dns.setTxt("_dmarc.verify.example.com", ["v=DMARC1; p=reject"]);
    const wrong = (await call("POST", url)).json();
    expect(wrong.records.map((r: Rec) => [r.purpose, r.state])).toEqual([
      ["dkim", "wrong"],
      ["spf", "wrong"],
      ["dmarc", "ok"],
    ]);
    expect(wrong.keys[0].status).toBe("pending");

    // As published by a DNS provider: split into strings of 255 characters, with spaces.
    dns.setTxt(dkim.name, [dkim.value.replace("; p=", ";  p= ")]);
    dns.setTxt("verify.example.com", ["v=spf1 a:postern.test ~all"]);
    const right = (await call("POST", url)).json();
    expect(right.records.map((r: Rec) => [r.purpose, r.state])).toEqual([
      ["dkim", "ok"],
      ["spf", "ok"],
      ["dmarc", "ok"],
    ]);
    expect(right).toMatchObject({
      verified: true,
      activated: ["pst1"],
      keys: [{ selector: "pst1", status: "active" }],
    });
    const audits = await ctx.db.auditEvent.findMany({
      where: { projectId: mine.project.id, action: "domain.verified" },
      orderBy: { id: "asc" },
    });
    expect(audits.at(-1)?.details).toMatchObject({ domainId: created.id, activated: ["pst1"] });

    // Rotation: a second key under pst2, the first still active; a second rotate waits for it.
    const rotated = await call("POST", `/v1/domains/${created.id}/rotate`, { algorithm: "ed25519" });
    expect(rotated.statusCode).toBe(200);
    expect(
      rotated.json().keys.map((k: { selector: string; status: string }) => [k.selector, k.status]),
    ).toEqual([
      ["pst1", "active"],
      ["pst2", "pending"],
    ]);
    expect(rotated.json().records.filter((r: Rec) => r.purpose === "dkim")).toHaveLength(2);
    const again = await call("POST", `/v1/domains/${created.id}/rotate`);
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe("rotation_pending");
  });

  it("keeps projects apart, serves operators under /admin/projects/:id, and deletes with 204", async () => {
    const created = (await call("POST", "/v1/domains", { domain: "apart.example.com" })).json();
    for (const [method, url] of [
      ["GET", `/v1/domains/${created.id}`],
      ["POST", `/v1/domains/${created.id}/verify`],
      ["DELETE", `/v1/domains/${created.id}`],
    ] as const) {
      const answer = await call(method, url, undefined, theirs.apiToken.token);
      expect(answer.statusCode).toBe(404);
      expect(answer.json().error.code).toBe("not_found");
    }
    expect((await call("GET", "/v1/domains", undefined, theirs.apiToken.token)).json().items).toEqual([]);

    const admin = { authorization: `Bearer ${ctx.config.adminToken}` };
    const listed = await app.inject({
      method: "GET",
      url: `/admin/projects/${mine.project.id}/domains`,
      headers: admin,
    });
    expect(listed.statusCode).toBe(200);
    expect(listed.json().items.map((d: { id: string }) => d.id)).toContain(created.id);
    const byOperator = await app.inject({
      method: "POST",
      url: `/admin/projects/${theirs.project.id}/domains`,
      headers: admin,
      payload: { domain: "operator.example.com" },
    });
    expect(byOperator.statusCode).toBe(201);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: theirs.project.id, action: "domain.created" },
    });
    expect(audit.actor).toBe("admin");

    expect((await call("DELETE", `/v1/domains/${created.id}`)).statusCode).toBe(204);
    expect((await call("GET", `/v1/domains/${created.id}`)).statusCode).toBe(404);
    expect((await call("DELETE", `/v1/domains/${randomUUID()}`)).statusCode).toBe(404);
    expect(await ctx.db.dkimKey.count({ where: { domainId: created.id } })).toBe(0);
    expect(
      await ctx.db.auditEvent.count({
        where: { action: "domain.deleted", details: { path: ["domainId"], equals: created.id } },
      }),
    ).toBe(1);
  });
});
