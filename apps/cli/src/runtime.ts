import { setFlagsFromString } from "node:v8";
import { ConfigError, loadConfig, type ResolvedConfig, resolveSecrets } from "@postern/config";
import { createDatabase, type Database, migrate } from "@postern/db";
import { provideServices, type Services } from "@postern/embedded";
// The Redis client alone: the package's index also brings BullMQ, which an operator command does not need.
import { createRedis, createRedisOnFirstUse, type Redis } from "@postern/queue/redis";
import {
  createLogger,
  createMetricsRegistry,
  type Logger,
  logDestination,
  type Registry,
} from "@postern/telemetry";

/** What every role is given: one config, one database pool, one Redis connection, one logger, one registry. */
export interface Runtime {
  config: ResolvedConfig;
  db: Database;
  redis: Redis;
  log: Logger;
  metrics: Registry;
  /** Set when the delivery worker runs in threads: /metrics merges their registries with `metrics`. */
  metricsExposition?: { contentType: string; metrics(): Promise<string> };
  /** Set by `postern start`: each role of the process, "ok" while it serves (/health/ready). */
  roleReadiness?: () => Record<string, string>;
  services: Services;
  /** Closes the database and Redis clients and stops embedded services this process started. */
  close(): Promise<void>;
}

/**
 * Loads the configuration, starts (or attaches to) embedded services where no URL is configured,
 * applies pending migrations and opens the shared clients.
 */
export async function openRuntime(options: {
  attach: boolean;
  onAdminTokenGenerated?: (token: string) => void;
  /** Where log lines go (default 1, stdout); the operator CLI sends them to stderr (2) so that stdout stays parseable. */
  logFd?: 1 | 2;
  /** The process runs the delivery worker alone (see `DatabaseOptions.genericPlans`). */
  workerOnly?: boolean;
}): Promise<Runtime> {
  // An operator command (`attach`) is over in a second: V8 then runs Prisma's query compiler
  // (WebAssembly) as its baseline compiler made it, without also recompiling its hot functions
  // with the optimizing one on background threads, which took a third of the command's CPU time.
  // Set before the client compiles the module; the long-running roles keep the optimizing tier.
  if (options.attach) setFlagsFromString("--liftoff-only --no-wasm-tier-up --no-wasm-dynamic-tiering");
  const base = loadConfig();
  const log = createLogger(
    { level: base.logLevel, name: "postern" },
    logDestination(base.logFormat, options.logFd),
  );
  const services = await provideServices(base, {
    attach: options.attach,
    log: (line) => log.debug({ component: "embedded" }, line),
  });
  try {
    const { config: withSecrets, generated } = resolveSecrets(base);
    if (generated.includes("adminToken")) options.onAdminTokenGenerated?.(withSecrets.adminToken);
    const config: ResolvedConfig = {
      ...withSecrets,
      databaseUrl: services.databaseUrl,
      redisUrl: services.redisUrl,
    };
    // Attached to the Postern that owns DATA_DIR: it applied the migrations when it started.
    if (!services.attached) {
      const result = await migrate(config.databaseUrl);
      if (result.applied.length > 0) log.info({ migrations: result.applied }, "applied database migrations");
    }
    let metrics: Registry | undefined;
    const db = createDatabase(config.databaseUrl, { genericPlans: options.workerOnly });
    // An operator command's services are all given a client; most commands never send a command.
    const redisOptions = { cluster: config.redisCluster };
    const { redis, disconnect: disconnectRedis } = options.attach
      ? createRedisOnFirstUse(config.redisUrl, redisOptions)
      : eager(createRedis(config.redisUrl, redisOptions));
    return {
      config,
      db,
      redis,
      log,
      // Made when a role first registers a metric: operator commands serve no /metrics.
      get metrics() {
        metrics ??= createMetricsRegistry();
        return metrics;
      },
      services,
      async close() {
        await db.$disconnect().catch(() => {});
        disconnectRedis();
        await services.stop();
      },
    };
  } catch (error) {
    await services.stop();
    throw error;
  }
}

function eager(redis: Redis): { redis: Redis; disconnect(): void } {
  return { redis, disconnect: () => redis.disconnect() };
}

/** Prints a startup failure as the one line an operator needs, and exits 1. */
export function exitWithStartupError(error: unknown): never {
  const message = error instanceof ConfigError ? error.message : (error as Error).message;
  process.stderr.write(`postern: ${message}\n`);
  process.exit(1);
}
