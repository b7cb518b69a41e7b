import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrate } from "@postern/db";
import { startEmbeddedPostgres, startEmbeddedRedis } from "@postern/embedded";
import pg from "pg";
import type { TestProject } from "vitest/node";

export const templateDatabase = "postern_template";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the ephemeral cluster's maintenance database (for CREATE DATABASE). */
    postgresAdminUrl: string;
    redisUrl: string;
  }
}

/**
 * Once per `vitest run`: one ephemeral PostgreSQL (fsync off) and one ephemeral redis-server, and
 * a migrated template database that every test file clones (CREATE DATABASE ... TEMPLATE takes
 * milliseconds, migrating takes longer).
 */
export default async function setup(project: TestProject) {
  const root = await mkdtemp(join(tmpdir(), "postern-test-"));
  // mkdtemp makes it 0700; run as root, PostgreSQL runs as `postgres` and must reach its directory.
  await chmod(root, 0o755);
  const [postgres, redis] = await Promise.all([
    startEmbeddedPostgres({ dir: join(root, "postgres"), ephemeral: true, database: templateDatabase }),
    startEmbeddedRedis({ dir: join(root, "redis"), ephemeral: true }),
  ]);
  await migrate(postgres.url);
  // Nobody may be connected to a template while it is cloned; migrate() has closed its connection.
  const adminUrl = postgres.url.replace(new RegExp(`/${templateDatabase}$`), "/postgres");
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`ALTER DATABASE "${templateDatabase}" WITH IS_TEMPLATE true`);
  await admin.end();

  project.provide("postgresAdminUrl", adminUrl);
  project.provide("redisUrl", redis.url);
  return async () => {
    await Promise.all([postgres.stop(), redis.stop()]);
    await rm(root, { recursive: true, force: true });
  };
}
