import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");
// Each run of the CLI compiles its sources (tsx) and opens the database: seconds apiece.
const cliTimeoutMs = 180_000;

let ctx: TestContext;
let fixture: ProjectFixture;
beforeAll(async () => {
  ctx = await createTestContext();
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(async () => {
  await ctx?.close();
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

describe("postern suppressions", () => {
  it(
    "add, list, remove; refuses a bad address and an unknown project",
    async () => {
      const projectId = fixture.project.id;
      const added = await postern(
        "suppressions",
        "add",
        projectId,
        "Gone@Example.net",
        "--reason",
        "hard_bounce",
      );
      expect(added.stderr).toBe("");
      expect(added.code).toBe(0);
      expect(added.stdout).toContain("suppressed gone@example.net  hard_bounce");
      const domain = await postern("suppressions", "add", projectId, "*@blocked.example", "--json");
      expect(JSON.parse(domain.stdout)).toMatchObject({ address: "*@blocked.example", reason: "manual" });

      const list = await postern("suppressions", "list", projectId);
      expect(list.stdout).toBe("*@blocked.example  manual\ngone@example.net  hard_bounce\n");
      const filtered = await postern("suppressions", "list", projectId, "--q", "gone", "--json");
      expect(JSON.parse(filtered.stdout).items.map((s: { address: string }) => s.address)).toEqual([
        "gone@example.net",
      ]);

      const removed = await postern("suppressions", "remove", projectId, "gone@example.net");
      expect(removed.code).toBe(0);
      const missing = await postern("suppressions", "remove", projectId, "gone@example.net");
      expect(missing.code).toBe(3);
      expect(missing.stderr).toContain("no suppression of gone@example.net");

      const bad = await postern("suppressions", "add", projectId, "not an address");
      expect(bad.code).toBe(2);
      const unknown = await postern(
        "suppressions",
        "add",
        "00000000-0000-7000-8000-000000000000",
        "x@example.net",
      );
      expect(unknown.code).toBe(3);
      expect(
        await ctx.db.auditEvent.count({ where: { projectId, action: "suppression.added", actor: "cli" } }),
      ).toBe(2);
    },
    cliTimeoutMs,
  );

  it(
    "imports a CSV file: reports added, updated and refused lines by number",
    async () => {
      const other = await createProjectFixture(ctx.db, ctx.config);
      await postern("suppressions", "add", other.project.id, "known@example.net");
      const dir = await mkdtemp(join(tmpdir(), "postern-suppr-"));
      const file = join(dir, "list.csv");
      const until = new Date(Date.now() + 86_400_000).toISOString();
      await writeFile(
        file,
        [
          "address,reason,expiresAt",
          "one@example.net,hard_bounce",
          "",
          "known@example.net,unsubscribe",
          "not an address,manual",
          `two@example.net,complaint,${until}`,
          "three@example.net,because",
          "*@domain.example,manual,",
          "four@example.net",
        ].join("\n"),
      );
      const run = await postern("suppressions", "import", other.project.id, "--csv", file);
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^added 3, updated 1, refused 3\n/);
      expect(run.stdout).toContain("line 5: address: must be an address");
      expect(run.stdout).toContain("line 7: reason:");
      expect(run.stdout).toContain("line 9: expected address,reason[,expiresAt]");

      const rows = await ctx.db.suppression.findMany({
        where: { projectId: other.project.id },
        orderBy: { address: "asc" },
      });
      expect(rows.map((r) => [r.address, r.reason, r.expiresAt?.toISOString() ?? null])).toEqual([
        ["*@domain.example", "manual", null],
        ["known@example.net", "unsubscribe", null],
        ["one@example.net", "hard_bounce", null],
        ["two@example.net", "complaint", until],
      ]);
      const json = await postern("suppressions", "import", other.project.id, "--csv", file, "--json");
      expect(JSON.parse(json.stdout)).toMatchObject({ added: 0, updated: 4 });

      const absent = await postern(
        "suppressions",
        "import",
        other.project.id,
        "--csv",
        join(dir, "none.csv"),
      );
      expect(absent.code).toBe(2);
      expect(absent.stderr).toContain("--csv:");
    },
    cliTimeoutMs,
  );
});
