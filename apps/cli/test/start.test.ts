import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "@postern/embedded";
import { createTestContext, type TestContext } from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listenerPorts } from "./ports";

const bin = fileURLToPath(new URL("../bin/postern.js", import.meta.url));
const bundleScript = fileURLToPath(new URL("../../../scripts/bundle.mjs", import.meta.url));
const bundle = fileURLToPath(new URL("../../../dist/postern.mjs", import.meta.url));

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Spawns `postern start` in a process group of its own and waits until it says it runs. */
async function start(env: Record<string, string>, entry = bin): Promise<Started> {
  const child = spawn(process.execPath, [entry, "start"], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", LOG_LEVEL: "warn", ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d) => (output += d));
  child.stderr?.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (output.includes("Postern is running")) {
        clearInterval(timer);
        resolve();
      }
    }, 50);
    exited.then((code) => {
      clearInterval(timer);
      reject(new Error(`postern start exited with ${code}: ${output}`));
    });
  });
  return { child, output: () => output, exited };
}

async function ready(httpPort: number): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/health/ready`);
  return { status: response.status, body: await response.json() };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The command names of `pid`'s child processes. */
async function childCommands(pid: number): Promise<string[]> {
  const commands: string[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // pid (comm) state ppid …: the command name may hold spaces, so split after its ')'.
    const [, comm, rest] = /^\d+ \((.*)\) (.*)$/s.exec(stat) ?? [];
    if (rest?.split(" ")[1] === String(pid)) commands.push(comm as string);
  }
  return commands.sort();
}

async function pidFrom(file: string): Promise<number> {
  return Number((await readFile(file, "utf8")).split("\n")[0]);
}

async function portsEnv() {
  return {
    HTTP_HOST: "127.0.0.1",
    SMTP_HOST: "127.0.0.1",
    ...(await listenerPorts()),
  };
}

describe("postern start, embedded", () => {
  let dataDir: string;
  beforeAll(async () => {
    const parent = await mkdtemp(join(tmpdir(), "postern-start-"));
    await chmod(parent, 0o755);
    dataDir = join(parent, "data");
  });
  afterAll(() => rm(join(dataDir, ".."), { recursive: true, force: true }));

  it("runs on embedded PostgreSQL and Redis, stops on SIGINT leaving no process, survives kill -9 with its data", async () => {
    const env = { DATA_DIR: dataDir, ...(await portsEnv()) };
    const httpPort = Number(env.HTTP_PORT);

    const first = await start(env);
    expect(await ready(httpPort)).toEqual({
      status: 200,
      body: { status: "ok", checks: { postgres: "ok", redis: "ok", api: "ok", worker: "ok", smtp: "ok" } },
    });
    // The generated operator token is printed once and kept, owner-only, in DATA_DIR.
    const adminToken = (await readFile(join(dataDir, "secrets/admin-token"), "utf8")).trim();
    expect(first.output()).toContain(adminToken);
    expect((await stat(join(dataDir, "secrets/admin-token"))).mode & 0o777).toBe(0o600);

    const { databaseUrl } = JSON.parse(await readFile(join(dataDir, "embedded.json"), "utf8"));
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    await db.query(`CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('survives')`);
    await db.end();

    const postgresPid = await pidFrom(join(dataDir, "postgres/postmaster.pid"));
    const redisPid = await pidFrom(join(dataDir, "redis/redis.pid"));
    // The delivery worker runs in a thread of this process (WORKER_THREADS, default 1), not in a
    // child process: the only children are the embedded services (PostgreSQL through a helper
    // that drops root).
    expect(first.output()).toMatch(/worker {3}1 thread: 50 deliveries in flight/);
    expect(await childCommands(first.child.pid as number)).not.toContain("node");
    expect(await childCommands(first.child.pid as number)).toContain("redis-server");
    first.child.kill("SIGINT");
    expect(await first.exited).toBe(0);
    expect(alive(postgresPid)).toBe(false);
    expect(alive(redisPid)).toBe(false);

    // Second start: no new token is printed; then the whole process group is killed with SIGKILL.
    const second = await start(env);
    expect(second.output()).not.toContain(adminToken);
    process.kill(-(second.child.pid as number), "SIGKILL");
    await second.exited;

    const third = await start(env);
    expect((await ready(httpPort)).status).toBe(200);
    const { databaseUrl: again } = JSON.parse(await readFile(join(dataDir, "embedded.json"), "utf8"));
    const check = new pg.Client({ connectionString: again });
    await check.connect();
    expect((await check.query("SELECT v FROM kept")).rows).toEqual([{ v: "survives" }]);
    await check.end();
    third.child.kill("SIGTERM");
    expect(await third.exited).toBe(0);
  }, 90_000);
});

/** The chunk of the bundle that holds a command's module (`commands/<name>.ts`). */
async function chunkOf(command: string): Promise<string> {
  const chunks = join(bundle, "../chunks");
  const file = (await readdir(chunks)).find(
    (name) => name.startsWith(`${command}-`) && name.endsWith(".mjs"),
  );
  if (!file) throw new Error(`no chunk of ${command} in ${chunks}`);
  return join(chunks, file);
}

/** The bundle's files that importing `files` evaluates, and the packages they import. */
async function staticImports(files: string[]): Promise<{ files: string[]; packages: string[] }> {
  const packages = new Set<string>();
  const seen = new Set<string>();
  const visit = async (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const code = await readFile(file, "utf8");
    for (const [, specifier] of code.matchAll(/^import\s[^;]*?["']([^"']+)["'];?$/gms)) {
      if (specifier?.startsWith(".")) await visit(join(file, "..", specifier));
      else if (specifier && !specifier.startsWith("node:")) packages.add(specifier);
    }
  };
  for (const file of files) await visit(file);
  return { files: [...seen], packages: [...packages] };
}

describe("the production bundle (dist/postern.mjs)", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "postern-bundle-"));
    // Embedded PostgreSQL runs as an unprivileged user when Postern runs as root.
    await chmod(dataDir, 0o755);
  });
  afterAll(() => rm(dataDir, { recursive: true, force: true }));

  it("builds, migrates a fresh database, runs its worker thread from itself and stops cleanly", async () => {
    await promisify(execFile)(process.execPath, [bundleScript]);
    const env = { DATA_DIR: join(dataDir, "data"), ...(await portsEnv()) };
    const started = await start(env, bundle);
    expect((await ready(Number(env.HTTP_PORT))).status).toBe(200);
    expect(started.output()).toMatch(/worker {3}1 thread: 50 deliveries in flight/);
    // The dashboard's files are found from the bundle's chunks as from the sources.
    const dashboard = await fetch(`http://127.0.0.1:${env.HTTP_PORT}/`);
    expect(dashboard.status).toBe(200);
    expect(await dashboard.text()).toContain('<div id="app">');
    started.child.kill("SIGINT");
    expect(await started.exited).toBe(0);
  }, 60_000);

  it("loads the API's and the SMTP server's libraries only where those roles run", async () => {
    // What a process or worker thread evaluates at start: the entry, the chunks it imports
    // statically, and their packages (ES imports are all evaluated before any code runs). The
    // commands' and the roles' chunks come later, by dynamic import, where they run.
    const start = await staticImports([bundle, await chunkOf("start")]);
    expect(start.files.length).toBeGreaterThan(2);
    // ioredis and prom-client are loaded by the first client and registry made (createRequire).
    expect(start.packages).toEqual(expect.arrayContaining(["pino", "zod", "pg"]));
    for (const role of [
      "fastify",
      "@fastify/swagger",
      "@fastify/swagger-ui",
      "smtp-server",
      "selfsigned",
      "mailparser",
    ])
      expect(start.packages).not.toContain(role);
  });

  it("loads only what an operator command needs", async () => {
    // `postern --help` evaluates commander alone; `postern project …` no Redis client, queue,
    // metrics, password hashing, DKIM or MIME library (what it does load: command-weight.test.ts).
    expect((await staticImports([bundle])).packages).toEqual(["commander"]);
    const { packages } = await staticImports([bundle, await chunkOf("project")]);
    expect(packages).toEqual(expect.arrayContaining(["@prisma/client/runtime/client", "pg"]));
    for (const heavy of [
      "ioredis",
      "bullmq",
      "prom-client",
      "bcrypt",
      "rate-limiter-flexible",
      "mailauth",
      "@zone-eu/mailsplit",
      "libmime",
      "fastify",
      "smtp-server",
    ])
      expect(packages.filter((name) => name === heavy || name.startsWith(`${heavy}/`))).toEqual([]);
  });
});

describe("postern start, with DATABASE_URL and REDIS_URL", () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext();
  });
  afterAll(() => ctx.close());

  it("starts no embedded service and uses the given servers", async () => {
    const env = { ...ctx.env, LOG_LEVEL: "warn", ...(await portsEnv()) };
    const started = await start(env);
    expect(started.output()).toContain("PostgreSQL from DATABASE_URL");
    expect(started.output()).toContain("Redis      from REDIS_URL");
    expect((await ready(Number(env.HTTP_PORT))).status).toBe(200);
    // The delivery metrics come from the worker thread, merged into the main thread's /metrics.
    const metrics = await (await fetch(`http://127.0.0.1:${env.HTTP_PORT}/metrics`)).text();
    expect(metrics).toContain("postern_delivery_queue_jobs");
    expect(metrics).toContain("postern_smtp_");
    await expect(stat(join(ctx.dataDir, "postgres"))).rejects.toThrow();
    await expect(stat(join(ctx.dataDir, "redis"))).rejects.toThrow();
    // SIGTERM to the whole process group (as systemd sends it): one graceful stop, SMTP first,
    // then the worker thread, not a forced exit.
    process.kill(-(started.child.pid as number), "SIGTERM");
    expect(await started.exited).toBe(0);
    expect(started.output()).not.toContain("second signal");
  });

  it("marks each worker thread's log lines with its thread id", async () => {
    const env = { ...ctx.env, LOG_LEVEL: "info", WORKER_THREADS: "2", ...(await portsEnv()) };
    const started = await start(env);
    process.kill(-(started.child.pid as number), "SIGTERM");
    expect(await started.exited).toBe(0);
    const lines = started
      .output()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { msg?: string; signal?: string; pid: number; thread?: number });
    // Each thread says it is shutting down when the main thread asks it to.
    const threads = lines.filter((l) => l.msg === "shutting down" && l.signal === "main thread");
    expect(new Set(threads.map((l) => l.thread)).size).toBe(2);
    expect(threads.every((l) => typeof l.thread === "number" && l.pid === started.child.pid)).toBe(true);
    const main = lines.find((l) => l.msg === "shutting down" && l.signal === "SIGTERM");
    expect(main).toBeDefined();
    expect(main).not.toHaveProperty("thread");
  });

  it("runs the inbound role too when BOUNCE_DOMAIN is set; `start inbound` without it stops with one line", async () => {
    const inboundPort = await freePort();
    const env = {
      ...ctx.env,
      LOG_LEVEL: "warn",
      BOUNCE_DOMAIN: "bounces.example.com",
      INBOUND_PORT: String(inboundPort),
      WORKER_THREADS: "0",
      ...(await portsEnv()),
    };
    const started = await start(env);
    expect(started.output()).toContain(
      `Inbound  127.0.0.1:${inboundPort}  (bounces and complaints for bounces.example.com)`,
    );
    const greeting = await new Promise<string>((resolve, reject) => {
      const socket = connect(inboundPort, "127.0.0.1");
      socket.once("data", (data) => {
        resolve(data.toString());
        socket.destroy();
      });
      socket.once("error", reject);
    });
    expect(greeting).toMatch(/^220 /);
    process.kill(-(started.child.pid as number), "SIGTERM");
    expect(await started.exited).toBe(0);

    const alone = await promisify(execFile)(process.execPath, [bin, "start", "inbound"], {
      env: { PATH: process.env.PATH ?? "", ...ctx.env, LOG_LEVEL: "warn", ...(await portsEnv()) },
    }).catch((error: { code: number; stderr: string }) => error);
    expect(alone).toMatchObject({ code: 1 });
    expect((alone as { stderr: string }).stderr.trim().split("\n").at(-1)).toBe(
      "postern: BOUNCE_DOMAIN: the inbound role needs the domain whose mail it receives",
    );
  });

  it("serves health probes and metrics on HTTP_PORT when it runs roles without the API", async () => {
    const env = { ...ctx.env, LOG_LEVEL: "warn", ...(await portsEnv()) };
    const child = spawn(process.execPath, [bin, "start", "worker"], {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    await expect.poll(() => output, { timeout: 20_000 }).toContain("Postern is running (worker)");
    expect((await ready(Number(env.HTTP_PORT))).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${env.HTTP_PORT}/metrics`)).text();
    expect(metrics).toContain("postern_delivery_");
    expect((await fetch(`http://127.0.0.1:${env.HTTP_PORT}/v1/stats`)).status).toBe(404);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("stops at start with one line naming a bad variable", async () => {
    const child = spawn(process.execPath, [bin, "start"], {
      env: { ...process.env, ...ctx.env, SMTP_PORT: "not-a-port" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/^postern: SMTP_PORT: /);
  });

  it("refuses --supervised outside a worker thread of postern start, in one line", async () => {
    const child = spawn(process.execPath, [bin, "start", "worker", "--supervised"], {
      env: { ...process.env, ...ctx.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(code).toBe(1);
    expect(stderr.trim()).toBe("postern: --supervised is internal to the worker threads of `postern start`");
  });
});
