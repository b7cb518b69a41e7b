import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "@postern/config";
import { lockDataDir } from "./data-dir-lock";
import { type RunningService, startEmbeddedPostgres } from "./postgres";
import { startEmbeddedRedis } from "./redis";

export interface Services {
  databaseUrl: string;
  redisUrl: string;
  /** What this process started (and must stop); empty when every URL was configured or attached. */
  started: ("postgres" | "redis")[];
  /** These are the services of the live Postern that owns DATA_DIR (`attach`), which migrated the database at its start. */
  attached: boolean;
  stop(): Promise<void>;
}

/**
 * Gives the connection URLs: the configured ones, or those of embedded PostgreSQL and redis-server
 * in DATA_DIR for whichever is unset. One Postern at a time owns a DATA_DIR (a kernel lock on
 * `postern.pid`, see data-dir-lock.ts).
 *
 * `attach`: when another live Postern owns DATA_DIR, use its embedded services instead of failing
 * (the operator CLI runs beside `npm start` this way).
 */
export async function provideServices(
  config: Config,
  options: { log: (line: string) => void; attach?: boolean },
): Promise<Services> {
  const { databaseUrl, redisUrl } = config;
  if (databaseUrl && redisUrl)
    return { databaseUrl, redisUrl, started: [], attached: false, stop: async () => {} };

  await mkdir(config.dataDir, { recursive: true, mode: 0o755 });
  const stateFile = join(config.dataDir, "embedded.json");
  const locking = await lockDataDir(join(config.dataDir, "postern.pid"));
  if (!locking.ok) {
    if (options.attach) {
      const state = JSON.parse(await readFile(stateFile, "utf8")) as {
        databaseUrl?: string;
        redisUrl?: string;
      };
      const attached = {
        databaseUrl: databaseUrl ?? state.databaseUrl,
        redisUrl: redisUrl ?? state.redisUrl,
      };
      if (attached.databaseUrl && attached.redisUrl) {
        return {
          databaseUrl: attached.databaseUrl,
          redisUrl: attached.redisUrl,
          started: [],
          attached: true,
          stop: async () => {},
        };
      }
    }
    const owner = locking.owner ? ` (pid ${locking.owner})` : "";
    throw new Error(
      `DATA_DIR ${config.dataDir} is in use by another Postern${owner}; stop it or choose another DATA_DIR`,
    );
  }
  const lock = locking.value;

  const running: RunningService[] = [];
  const started: Services["started"] = [];
  const stopAll = async () => {
    for (const service of running.reverse()) await service.stop();
    running.length = 0;
    await rm(stateFile, { force: true });
    lock.release();
  };
  // If Postern dies without a chance to stop them, at least signal the children on the way out.
  const onExit = () => {
    for (const service of running) service.killNow();
  };
  process.once("exit", onExit);

  try {
    let db = databaseUrl;
    if (!db) {
      const postgres = await startEmbeddedPostgres({
        dir: join(config.dataDir, "postgres"),
        onLog: options.log,
      });
      running.push(postgres);
      started.push("postgres");
      db = postgres.url;
    }
    let redis = redisUrl;
    if (!redis) {
      const server = await startEmbeddedRedis({ dir: join(config.dataDir, "redis"), onLog: options.log });
      running.push(server);
      started.push("redis");
      redis = server.url;
    }
    await writeFile(stateFile, JSON.stringify({ databaseUrl: db, redisUrl: redis }), { mode: 0o600 });
    return {
      databaseUrl: db,
      redisUrl: redis,
      started,
      attached: false,
      async stop() {
        process.removeListener("exit", onExit);
        await stopAll();
      },
    };
  } catch (error) {
    await stopAll();
    process.removeListener("exit", onExit);
    throw error;
  }
}
