import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type EnvSource, loadConfig, type ResolvedConfig, resolveSecrets } from "@postern/config";
import { createDatabase, type Database } from "@postern/db";
import { createRedis } from "@postern/queue";
import type { Redis } from "ioredis";
import pg from "pg";
import { inject } from "vitest";

const templateDatabase = "postern_template";

export interface TestContext {
  /** A database of its own, migrated, empty. */
  databaseUrl: string;
  redisUrl: string;
  /** Keys of this context live under this prefix in the shared test Redis. */
  redisKeyPrefix: string;
  dataDir: string;
  /** Config as loaded from env with this context's services; `overrides` are more variables. */
  config: ResolvedConfig;
  /** The variables `config` was loaded from, for spawning Postern processes. */
  env: Record<string, string>;
  db: Database;
  redis: Redis;
  close(): Promise<void>;
}

/**
 * Per test file (or per test): a fresh database cloned from the migrated template, a key prefix of
 * its own in the run's Redis, a temporary DATA_DIR, and a Config pointing at all of them.
 */
export async function createTestContext(overrides: EnvSource = {}): Promise<TestContext> {
  const adminUrl = inject("postgresAdminUrl");
  const redisUrl = inject("redisUrl");
  const name = `t_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}" TEMPLATE "${templateDatabase}"`);
  } finally {
    await admin.end();
  }
  const databaseUrl = adminUrl.replace(/\/postgres$/, `/${name}`);
  const dataDir = await mkdtemp(join(tmpdir(), "postern-data-"));
  const redisKeyPrefix = `test-${name}`;
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisKeyPrefix,
    DATA_DIR: dataDir,
    ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    ADMIN_TOKEN: `pst_admin_${randomBytes(24).toString("base64url")}`,
    SMTP_HOST: "127.0.0.1",
    SMTP_HOSTNAME: "postern.test",
    HTTP_HOST: "127.0.0.1",
    LOG_LEVEL: "silent",
    ...Object.fromEntries(Object.entries(overrides).filter((e): e is [string, string] => e[1] !== undefined)),
  };
  const config: ResolvedConfig = {
    ...resolveSecrets(loadConfig(env, dataDir)).config,
    databaseUrl,
    redisUrl,
  };
  const db = createDatabase(databaseUrl, { max: 5 });
  const redis = createRedis(redisUrl);
  return {
    databaseUrl,
    redisUrl,
    redisKeyPrefix,
    dataDir,
    config,
    env,
    db,
    redis,
    async close() {
      await db.$disconnect();
      // Leave the shared Redis as we found it for the other files of the run.
      const keys = await redis.keys(`${redisKeyPrefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
