import { execFile } from "node:child_process";
import { resolve } from "node:path";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
  TestDnsServer,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");

let dns: TestDnsServer;
let ctx: TestContext;
let fixture: ProjectFixture;
beforeAll(async () => {
  dns = await TestDnsServer.start();
  ctx = await createTestContext({ DNS_SERVERS: dns.address });
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(async () => {
  await ctx?.close();
  await dns?.stop();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function postern(...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile("node", [bin, ...args], { env: { ...process.env, ...ctx.env } }, (error, stdout, stderr) => {
      done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("postern domains", () => {
  it("add, list, verify and remove a domain", async () => {
    const projectId = fixture.project.id;
    const added = await postern(
      "domains",
      "add",
      projectId,
      "cli.example.com",
      "--algorithm",
      "ed25519",
      "--json",
    );
    expect(added.stderr).toBe("");
    expect(added.code).toBe(0);
    const domain = JSON.parse(added.stdout);
    expect(domain).toMatchObject({
      domain: "cli.example.com",
      keys: [{ selector: "pst1", algorithm: "ed25519" }],
    });
    expect(added.stdout).not.toMatch(/PRIVATE KEY/);

    const text = await postern("domains", "list", projectId);
    expect(text.stdout).toContain("cli.example.com  not verified  pst1:pending");

    const missing = await postern("domains", "verify", projectId, "cli.example.com", "--json");
    expect(missing.code).toBe(0);
    expect(JSON.parse(missing.stdout).records[0]).toMatchObject({ purpose: "dkim", state: "missing" });

    const dkim = domain.records.find((r: { purpose: string }) => r.purpose === "dkim");
    dns.setTxt(dkim.name, [dkim.value]);
    const found = await postern("domains", "verify", projectId, "cli.example.com");
    expect(found.code).toBe(0);
    expect(found.stdout).toMatch(/verified\s+yes/);
    expect(found.stdout).toMatch(/ok\s+dkim/);
    expect(await ctx.db.auditEvent.count({ where: { action: "domain.verified", actor: "cli" } })).toBe(2);

    const again = await postern("domains", "add", projectId, "cli.example.com");
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/already a domain/);
    const bad = await postern("domains", "add", projectId, "not a domain");
    expect(bad.code).toBe(2);

    const removed = await postern("domains", "remove", projectId, "cli.example.com");
    expect(removed.code).toBe(0);
    expect(await ctx.db.domain.count({ where: { projectId } })).toBe(0);
    expect((await postern("domains", "verify", projectId, "cli.example.com")).code).toBe(3);
    // Nine runs of the binary, each opening the database: seconds apiece on a loaded machine.
  }, 180_000);
});
