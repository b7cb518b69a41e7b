import { execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { redisMissingMessage, startEmbeddedPostgres, startEmbeddedRedis } from "@postern/embedded";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "postern-embedded-"));
  await chmod(root, 0o755);
});
afterAll(() => rm(root, { recursive: true, force: true }));

async function sql(url: string, text: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function postmasterPid(dir: string): Promise<number> {
  return Number((await readFile(join(dir, "postmaster.pid"), "utf8")).split("\n")[0]);
}

describe("embedded PostgreSQL", () => {
  it("keeps its data across a stop and a start, and leaves no process behind", async () => {
    const dir = join(root, "pg-restart");
    const first = await startEmbeddedPostgres({ dir });
    await sql(first.url, `CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')`);
    const pid = await postmasterPid(dir);
    await first.stop();
    expect(alive(pid)).toBe(false);

    const second = await startEmbeddedPostgres({ dir });
    expect(await sql(second.url, "SELECT v FROM kept")).toEqual([{ v: "still here" }]);
    await second.stop();
  });

  it("starts cleanly after the server itself was killed with SIGKILL (crash recovery)", async () => {
    const dir = join(root, "pg-sigkill");
    const first = await startEmbeddedPostgres({ dir });
    await sql(first.url, `CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('committed')`);
    process.kill(await postmasterPid(dir), "SIGKILL");

    const second = await startEmbeddedPostgres({ dir });
    expect(await sql(second.url, "SELECT v FROM kept")).toEqual([{ v: "committed" }]);
    await second.stop();
  });

  it("stops a server left running by a Postern that was killed, then starts its own", async () => {
    const dir = join(root, "pg-orphan");
    await startEmbeddedPostgres({ dir }); // never stopped: the owner "died"
    const orphan = await postmasterPid(dir);

    const next = await startEmbeddedPostgres({ dir });
    expect(alive(orphan)).toBe(false);
    expect(await sql(next.url, "SELECT 1 AS one")).toEqual([{ one: 1 }]);
    await next.stop();
  });
});

describe("embedded Redis", () => {
  it("persists with AOF across a stop and a start", async () => {
    const dir = join(root, "redis");
    const first = await startEmbeddedRedis({ dir });
    const client = new Redis(first.url);
    await client.set("kept", "yes");
    client.disconnect();
    await first.stop();

    const second = await startEmbeddedRedis({ dir });
    const again = new Redis(second.url);
    expect(await again.get("kept")).toBe("yes");
    again.disconnect();
    await second.stop();
  });

  it("requires a password outside tests and listens on loopback only", async () => {
    const server = await startEmbeddedRedis({ dir: join(root, "redis-auth") });
    expect(server.url).toMatch(/^redis:\/\/:[^@]+@127\.0\.0\.1:\d+$/);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(server.port, "127.0.0.1", () => socket.write("GET x\r\n"));
      socket.once("data", (data) => {
        resolve(data.toString());
        socket.destroy();
      });
      socket.once("error", reject);
    });
    expect(reply).toMatch(/^-NOAUTH/);
    await server.stop();
  });

  it("says how to get redis-server when it is not on PATH", async () => {
    // A PATH with a shell but no redis-server.
    const bin = join(root, "bin-without-redis");
    await import("node:fs/promises").then((fs) => fs.mkdir(bin));
    await symlink("/bin/sh", join(bin, "sh"));
    const script = `import("@postern/embedded").then(m => m.startEmbeddedRedis({ dir: ${JSON.stringify(join(root, "r2"))} })).catch(e => { console.log(e.message); })`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "-e", script], {
      env: { PATH: bin },
      cwd: process.cwd(),
    });
    expect(stdout.trim()).toBe(redisMissingMessage);
    expect(redisMissingMessage).toContain("apt-get install redis-server");
    expect(redisMissingMessage).toContain("brew install redis");
  });
});
