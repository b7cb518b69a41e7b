import { execFile } from "node:child_process";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * What an operator command loads, not how long it takes (timings are for docs/operations.md): a
 * command answers quickly because it loads only what it uses. Each package below took a visible
 * part of `postern project list`'s time when it was loaded for nothing.
 */

const bin = resolve(import.meta.dirname, "../bin/postern.js");
const census = resolve(import.meta.dirname, "loaded-modules.mjs");

let ctx: TestContext;
let dir: string;
beforeAll(async () => {
  ctx = await createTestContext();
  dir = await mkdtemp(join(tmpdir(), "postern-weight-"));
});
afterAll(() => ctx.close());

interface Census {
  code: number;
  stdout: string;
  stderr: string;
  /** The npm packages whose CommonJS modules the command loaded. */
  packages: Set<string>;
  /** Whether it compiled Prisma's query compiler (WebAssembly). */
  queryCompiler: boolean;
}

let runs = 0;
function postern(...args: string[]): Promise<Census> {
  const file = join(dir, `census-${++runs}.json`);
  return new Promise((done, fail) => {
    execFile(
      "node",
      ["--import", census, bin, ...args],
      // pretty: the log stream of a terminal, made only when a line is written.
      { env: { ...process.env, ...ctx.env, LOG_FORMAT: "pretty", LOADED_MODULES_FILE: file } },
      (error, stdout, stderr) => {
        readFile(file, "utf8").then((text) => {
          const loaded = JSON.parse(text) as { files: string[]; webAssembly: string[][] };
          const packages = new Set(
            loaded.files.map((path) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path)?.[1] ?? ""),
          );
          done({
            code: error ? Number(error.code ?? 1) : 0,
            stdout,
            stderr,
            packages,
            queryCompiler: loaded.webAssembly.some((exports) => exports.includes("querycompiler_new")),
          });
        }, fail);
      },
    );
  });
}

const unusedByListing = [
  "ioredis",
  "bullmq",
  "prom-client",
  "bcrypt",
  "rate-limiter-flexible",
  "mailauth",
  "pino-pretty",
  "nodemailer",
  "smtp-server",
  "fastify",
];

describe("what an operator command loads", () => {
  it("`project list` reads with node-postgres alone: no Prisma query compiler, Redis, BullMQ, bcrypt, metrics or pino-pretty", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const list = await postern("project", "list", "--json");
    expect(list.stderr).toBe("");
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).items.map((p: { id: string }) => p.id)).toContain(project.id);
    expect(list.packages).toContain("pg");
    for (const name of unusedByListing) expect(list.packages, name).not.toContain(name);
    expect(list.queryCompiler).toBe(false);
  });

  it("sees what a command does load: `project show` compiles Prisma's query compiler, `project suspend` connects to Redis", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const show = await postern("project", "show", project.id, "--json");
    expect(show.code).toBe(0);
    expect(show.queryCompiler).toBe(true);
    expect(show.packages).not.toContain("ioredis");

    const suspend = await postern("project", "suspend", project.id, "--json");
    expect(suspend.code).toBe(0);
    expect(JSON.parse(suspend.stdout).status).toBe("suspended");
    expect(suspend.packages).toContain("ioredis");
  });
});
