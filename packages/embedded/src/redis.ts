import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { RunningService } from "./postgres";
import { freePort, livePidFrom, terminate, which } from "./process";

export interface EmbeddedRedisOptions {
  dir: string;
  /** Test servers keep nothing on disk and are deleted on stop. */
  ephemeral?: boolean;
  /**
   * A node of a Redis Cluster (`cluster-enabled`), not yet joined to one: `redis-cli --cluster
   * create` joins the nodes (packages/testkit's `startRedisCluster`).
   */
  cluster?: boolean;
  onLog?: (line: string) => void;
}

export const redisMissingMessage =
  "redis-server not found on PATH: install it (apt-get install redis-server, or brew install redis) or set REDIS_URL";

/**
 * Starts `redis-server` from PATH on a free loopback port with its data in `dir` (AOF persistence
 * unless ephemeral). Settings, the password included, go through a 0600 config file so that they
 * never appear in `ps`. A server left running by a killed Postern is stopped first.
 */
export async function startEmbeddedRedis(options: EmbeddedRedisOptions): Promise<RunningService> {
  const binary = await which("redis-server");
  if (!binary) throw new Error(redisMissingMessage);
  const log = options.onLog ?? (() => {});
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const pidFile = join(options.dir, "redis.pid");
  const orphan = await livePidFrom(pidFile);
  if (orphan) {
    log(`stopping redis-server (pid ${orphan}) left running by a previous run`);
    await terminate(orphan, "SIGTERM", 30_000);
  }

  const password = options.ephemeral ? undefined : await readOrCreatePassword(join(options.dir, "password"));
  const port = await freePort();
  // The cluster bus gets a free port of its own: the default, the port + 10000, may be taken or
  // above 65535 for a port from the ephemeral range.
  const clusterLines = options.cluster
    ? [
        "cluster-enabled yes",
        `cluster-config-file ${join(options.dir, "nodes.conf")}`,
        `cluster-port ${await freePort()}`,
      ]
    : [];
  const conf = [
    `port ${port}`,
    "bind 127.0.0.1",
    `dir ${options.dir}`,
    `pidfile ${pidFile}`,
    "daemonize no",
    'save ""',
    options.ephemeral ? "appendonly no" : "appendonly yes",
    "appendfsync everysec",
    // BullMQ requires that Redis never evicts its keys.
    "maxmemory-policy noeviction",
    ...(password ? [`requirepass ${password}`] : []),
    ...clusterLines,
  ].join("\n");
  const confFile = join(options.dir, "redis.conf");
  await writeFile(confFile, `${conf}\n`, { mode: 0o600 });

  const child = spawn(binary, [confFile], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    let output = "";
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      for (const line of text.split("\n")) if (line.trim()) log(line.trim());
      if (output.includes("Ready to accept connections")) resolve();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("exit", (code) =>
      reject(
        new Error(
          `redis-server exited with code ${code}: ${output.trim().split("\n").slice(-3).join(" | ")}`,
        ),
      ),
    );
  });

  const auth = password ? `:${encodeURIComponent(password)}@` : "";
  let stopped = false;
  return {
    url: `redis://${auth}127.0.0.1:${port}`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      // SIGTERM: redis-server flushes the AOF and exits.
      if (child.pid) await terminate(child.pid, "SIGTERM", 30_000);
      if (options.ephemeral) await rm(options.dir, { recursive: true, force: true });
    },
    killNow() {
      if (!stopped && child.pid) {
        try {
          process.kill(child.pid, "SIGTERM");
        } catch {}
      }
    },
  };
}

async function readOrCreatePassword(file: string): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    const password = randomBytes(18).toString("hex");
    await writeFile(file, `${password}\n`, { mode: 0o600 });
    return password;
  }
}
