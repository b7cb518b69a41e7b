import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { recordAudit } from "@postern/audit";
import { openSecret } from "@postern/auth";
import { createTestContext, type TestContext } from "@postern/testkit";
import bcrypt from "bcrypt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function postern(...args: string[]): Promise<Run> {
  return posternWith({}, ...args);
}

function posternWith(env: Record<string, string>, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(
      "node",
      [bin, ...args],
      { env: { ...process.env, ...ctx.env, ...env } },
      (error, stdout, stderr) => {
        done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

async function createProject(name = "cli project") {
  const run = await posternWith(
    { UPSTREAM_PASSWORD: "cli-pw" },
    "project",
    "create",
    "--name",
    name,
    "--upstream",
    "smtp://u@mx.example.net:587",
    "--json",
  );
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout);
}

describe("postern project", () => {
  it("creates a project (secrets printed once), lists and shows it as JSON", async () => {
    const created = await createProject();
    expect(created).toMatchObject({
      name: "cli project",
      status: "active",
      upstream: "smtp://u@mx.example.net:587",
    });
    const row = await ctx.db.smtpCredential.findUniqueOrThrow({ where: { key: created.smtp.username } });
    expect(await bcrypt.compare(created.smtp.password, row.secretHash)).toBe(true);
    const events = await ctx.db.auditEvent.findMany({ where: { projectId: created.id } });
    expect(events.map((e) => [e.action, e.actor])).toContainEqual(["project.created", "cli"]);

    const list = await postern("project", "list", "--json");
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).items.map((p: { id: string }) => p.id)).toContain(created.id);

    const show = await postern("project", "show", created.id, "--json");
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout).credentials[0].username).toBe(created.smtp.username);
    for (const output of [list.stdout, show.stdout]) {
      expect(output).not.toContain(created.smtp.password);
      expect(output).not.toContain(created.apiToken.token);
      expect(output).not.toContain("cli-pw");
    }
  });

  it("update sets holds, duplicates, sandbox and the return path, naming a bad option", async () => {
    const created = await createProject();
    const settings = await postern(
      "project",
      "update",
      created.id,
      "--mode",
      "sandbox",
      "--hold-ttl-minutes",
      "30",
      "--hold-expiry",
      "approve",
      "--dedup-window-seconds",
      "120",
      "--return-path",
      "verp",
      "--json",
    );
    expect(settings.code).toBe(0);
    expect(JSON.parse(settings.stdout)).toMatchObject({
      mode: "sandbox",
      holdTtlMinutes: 30,
      holdExpiry: "approve",
      dedupWindowSeconds: 120,
      returnPath: "verp",
    });
    const badExpiry = await postern("project", "update", created.id, "--hold-expiry", "later");
    expect(badExpiry.code).toBe(2);
    expect(badExpiry.stderr).toContain("--hold-expiry");
    const badReturnPath = await postern("project", "update", created.id, "--return-path", "bounce");
    expect(badReturnPath.code).toBe(2);
    expect(badReturnPath.stderr).toContain("--return-path");
  });

  it("suspends, resumes, updates and refuses to delete with pending mail unless forced", async () => {
    const created = await createProject();
    expect(JSON.parse((await postern("project", "suspend", created.id, "--json")).stdout).status).toBe(
      "suspended",
    );
    expect(JSON.parse((await postern("project", "resume", created.id, "--json")).stdout).status).toBe(
      "active",
    );
    const updated = await postern(
      "project",
      "update",
      created.id,
      "--quota-daily",
      "77",
      "--sender-domain",
      "a.example",
      "--json",
    );
    expect(updated.code).toBe(0);
    expect(JSON.parse(updated.stdout)).toMatchObject({ quota: { daily: 77 }, senderDomains: ["a.example"] });

    await ctx.db.message.create({
      data: {
        projectId: created.id,
        mailFrom: "a@a.example",
        size: 1,
        sha256: "0".repeat(64),
        status: "queued",
      },
    });
    const refused = await postern("project", "delete", created.id);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/queued, deferred or held/);
    expect((await postern("project", "delete", created.id, "--force")).code).toBe(0);
    expect(await ctx.db.project.count({ where: { id: created.id } })).toBe(0);
  });

  it("takes the upstream password from a file or UPSTREAM_PASSWORD, never from the command line", async () => {
    const inUrl = await postern(
      "project",
      "create",
      "--name",
      "x",
      "--upstream",
      "smtp://u:argv-pw@mx.example.net",
    );
    expect(inUrl.code).toBe(2);
    expect(inUrl.stderr).toMatch(/--upstream: a password on the command line .*--upstream-password-file/);

    const file = join(await mkdtemp(join(tmpdir(), "postern-cli-")), "upstream-password");
    await writeFile(file, "file-p@ss:word\n", { mode: 0o600 });
    const fromFile = await postern(
      "project",
      "create",
      "--name",
      "from file",
      "--upstream",
      "smtp://u@mx.example.net:587?tls=required",
      "--upstream-password-file",
      file,
      "--json",
    );
    expect(fromFile.stderr).toBe("");
    const created = JSON.parse(fromFile.stdout);
    expect(created.upstream).toBe("smtp://u@mx.example.net:587?tls=required");
    const row = await ctx.db.project.findUniqueOrThrow({ where: { id: created.id } });
    expect(openSecret(row.upstreamSecret ?? "", ctx.config.encryptionKey)).toBe("file-p@ss:word");

    const fromEnvironment = await posternWith(
      { UPSTREAM_PASSWORD: "env-secret" },
      "project",
      "update",
      created.id,
      "--upstream",
      "smtps://u@mx2.example.net",
      "--json",
    );
    expect(fromEnvironment.code).toBe(0);
    const updated = await ctx.db.project.findUniqueOrThrow({ where: { id: created.id } });
    expect(openSecret(updated.upstreamSecret ?? "", ctx.config.encryptionKey)).toBe("env-secret");
    expect(fromEnvironment.stdout).not.toContain("env-secret");

    const missingFile = await postern(
      "project",
      "update",
      created.id,
      "--upstream",
      "smtp://u@mx.example.net",
      "--upstream-password-file",
      "/nonexistent/postern-pw",
    );
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toContain(
      "--upstream-password-file: cannot read /nonexistent/postern-pw (ENOENT)",
    );
  });

  it("replaces routes from a file (routes set), shows them without passwords (routes get), exits 4 on a stale version", async () => {
    const created = await createProject("routed");
    const file = join(await mkdtemp(join(tmpdir(), "postern-cli-")), "routes.json");
    const routes = [
      {
        match: "*@partner.example",
        target: { type: "upstream", urls: ["smtp://u:route-pw@mx.partner.example"] },
      },
      { match: "*@blocked.example", target: { type: "reject" } },
    ];
    await writeFile(file, JSON.stringify({ version: 0, routes }));
    const set = await postern("routes", "set", created.id, "--file", file, "--json");
    expect(set.stderr).toBe("");
    expect(JSON.parse(set.stdout)).toEqual({ version: 1 });
    const got = await postern("routes", "get", created.id, "--json");
    expect(got.stdout).not.toContain("route-pw");
    expect(JSON.parse(got.stdout)).toEqual({
      version: 1,
      routes: [
        { match: "*@partner.example", target: { type: "upstream", urls: ["smtp://u@mx.partner.example"] } },
        { match: "*@blocked.example", target: { type: "reject" } },
      ],
    });
    const stale = await postern("routes", "set", created.id, "--file", file);
    expect(stale.code).toBe(4);
    expect(stale.stderr).toContain("routes are at version 1, not 0");
  });

  it("exits 2 naming the option for bad input, 3 for an unknown project", async () => {
    const badUpstream = await postern(
      "project",
      "create",
      "--name",
      "x",
      "--upstream",
      "http://mx.example.net",
    );
    expect(badUpstream.code).toBe(2);
    expect(badUpstream.stderr).toContain("--upstream");
    const badQuota = await postern(
      "project",
      "create",
      "--name",
      "x",
      "--upstream",
      "smtp://h",
      "--quota-daily",
      "lots",
    );
    expect(badQuota.code).toBe(2);
    expect(badQuota.stderr).toContain("--quota-daily");
    const missing = await postern("project", "create", "--upstream", "smtp://h");
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--name");
    const unknown = await postern("project", "show", randomUUID(), "--json");
    expect(unknown.code).toBe(3);
    expect(JSON.parse(unknown.stdout).error.code).toBe("not_found");
    expect((await postern("project", "show", "not-a-uuid")).code).toBe(2);
  });

  it("has --help everywhere and exits 2 for an unknown command", async () => {
    for (const args of [
      ["--help"],
      ["project", "--help"],
      ["project", "create", "--help"],
      ["audit", "tail", "--help"],
    ]) {
      const help = await postern(...args);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain("Usage: postern");
    }
    expect((await postern("projects")).code).toBe(2);
  });
});

describe("postern credentials and token", () => {
  it("issues and revokes credentials and tokens", async () => {
    const created = await createProject();
    const credential = JSON.parse((await postern("credentials", "create", created.id, "--json")).stdout);
    expect(credential.password).toMatch(/^pst_secret_/);
    const revoked = await postern("credentials", "revoke", created.id, credential.id, "--json");
    expect(revoked.code).toBe(0);
    expect(
      (await ctx.db.smtpCredential.findUniqueOrThrow({ where: { id: credential.id } })).revokedAt,
    ).not.toBeNull();
    expect((await postern("credentials", "revoke", created.id, randomUUID())).code).toBe(3);

    const token = JSON.parse((await postern("token", "create", created.id, "--json")).stdout);
    expect(token.token).toMatch(/^pst_api_/);
    expect((await postern("token", "revoke", created.id, token.id)).code).toBe(0);
    expect((await ctx.db.apiToken.findUniqueOrThrow({ where: { id: token.id } })).revokedAt).not.toBeNull();
  });
});

describe("postern audit tail", () => {
  it("prints past events filtered, as JSON lines", async () => {
    const created = await createProject("audited");
    const run = await postern("audit", "tail", "--project", created.id, "--json");
    expect(run.code).toBe(0);
    const events = run.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(events.map((e) => e.action)).toEqual(["project.created", "credential.created", "token.created"]);
    const byAction = await postern("audit", "tail", "--action", "token.created", "-n", "1");
    expect(byAction.stdout).toContain("token.created");
    expect(byAction.stdout.trim().split("\n")).toHaveLength(1);
    expect((await postern("audit", "tail", "--action", "nope")).code).toBe(2);
  });

  it("follows new events until interrupted, then exits 0", async () => {
    const child = spawn("node", [bin, "audit", "tail", "--follow", "--json", "--action", "auth.blocked"], {
      env: { ...process.env, ...ctx.env },
    });
    let stdout = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    // Wait until it is following (the database is reachable and the past page is printed).
    await new Promise((r) => setTimeout(r, 3000));
    const event = await recordAudit(ctx.db, { action: "auth.blocked", actor: "smtp:k", ip: "198.51.100.7" });
    await expect
      .poll(
        () =>
          stdout
            .trim()
            .split("\n")
            .filter(Boolean)
            .map((l) => JSON.parse(l).id),
        { timeout: 5000 },
      )
      .toContain(String(event.id));
    child.kill("SIGINT");
    expect(await exited).toBe(0);
  });
});
