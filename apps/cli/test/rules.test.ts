import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");

let ctx: TestContext;
let fixture: ProjectFixture;
beforeAll(async () => {
  ctx = await createTestContext();
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(() => ctx.close());

function postern(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile("node", [bin, ...args], { env: { ...process.env, ...ctx.env } }, (error, stdout, stderr) => {
      done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function rulesFile(name: string, content: unknown) {
  const file = join(ctx.dataDir, name);
  await writeFile(file, typeof content === "string" ? content : JSON.stringify(content));
  return file;
}

describe("postern rules", () => {
  it("set from a file, get as JSON (the input of set) and as text; audited as the cli", async () => {
    const projectId = fixture.project.id;
    const empty = await postern("rules", "get", "--project", projectId, "--json");
    expect(empty.code).toBe(0);
    expect(JSON.parse(empty.stdout)).toEqual({ version: 0, rules: [] });

    const rules = [
      { name: "no-exe", match: { attachmentExtensions: [".exe"] }, action: "deny" },
      { name: "review", match: { to: "*@new.example" }, action: "hold" },
    ];
    const set = await postern(
      "rules",
      "set",
      "--project",
      projectId,
      "--file",
      await rulesFile("r1.json", { version: 0, rules }),
    );
    expect(set.stderr).toBe("");
    expect(set.code).toBe(0);
    expect(set.stdout).toContain("version 1");

    const got = await postern("rules", "get", "--project", projectId, "--json");
    expect(JSON.parse(got.stdout)).toEqual({ version: 1, rules });
    const text = await postern("rules", "get", "--project", projectId);
    expect(text.stdout).toContain("1. deny   no-exe");
    expect(text.stdout).toContain("2. hold   review");

    const audit = await ctx.db.auditEvent.findFirstOrThrow({ where: { projectId, action: "rules.updated" } });
    expect(audit.actor).toBe("cli");
    // Five spawns of the binary, a few seconds each on a loaded machine.
  }, 90_000);

  it("a stale version exits 4; invalid rules exit 2 naming the field; an unknown project exits 3", async () => {
    const projectId = fixture.project.id;
    const current = JSON.parse((await postern("rules", "get", "--project", projectId, "--json")).stdout);
    const stale = await postern(
      "rules",
      "set",
      "--project",
      projectId,
      "--file",
      await rulesFile("stale.json", { version: current.version - 1, rules: [] }),
    );
    expect(stale.code).toBe(4);
    expect(stale.stderr).toContain(`the rules are at version ${current.version}`);

    const invalidFile = await rulesFile("invalid.json", {
      version: current.version,
      rules: [{ name: "x", match: { to: "not an address" }, action: "deny" }],
    });
    const invalid = await postern("rules", "set", "--project", projectId, "--file", invalidFile, "--json");
    expect(invalid.code).toBe(2);
    expect(JSON.parse(invalid.stdout).error.code).toBe("invalid_rules");
    expect(invalid.stderr).toContain("rules.0.match.to:");

    const notJson = await postern(
      "rules",
      "set",
      "--project",
      projectId,
      "--file",
      await rulesFile("bad.json", "{"),
    );
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toContain("not JSON");

    const unknown = await postern(
      "rules",
      "set",
      "--project",
      "00000000-0000-7000-8000-000000000000",
      "--file",
      await rulesFile("empty.json", { version: 0, rules: [] }),
    );
    expect(unknown.code).toBe(3);
    // Nothing changed by the refusals.
    expect(JSON.parse((await postern("rules", "get", "--project", projectId, "--json")).stdout)).toEqual(
      current,
    );
  });
});
