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
  const started = await Promise.allSettled([
    startEmbeddedPostgres({ dir: join(root, "postgres"), ephemeral: true, database: templateDatabase }),
    startEmbeddedRedis({ dir: join(root, "redis"), ephemeral: true }),
  ]);
  const stopAll = async () => {
    for (const result of started) if (result.status === "fulfilled") await result.value.stop();
    await rm(root, { recursive: true, force: true });
  };
  const [postgres, redis] = started;
  if (postgres?.status !== "fulfilled" || redis?.status !== "fulfilled") {
    // Leave no server behind when the other one could not start.
    await stopAll();
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    throw failed?.reason;
  }
  let adminUrl: string;
  try {
    await migrate(postgres.value.url);
    // Nobody may be connected to a template while it is cloned; migrate() has closed its connection.
    adminUrl = postgres.value.url.replace(new RegExp(`/${templateDatabase}$`), "/postgres");
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`ALTER DATABASE "${templateDatabase}" WITH IS_TEMPLATE true`);
    await admin.end();
  } catch (error) {
    await stopAll();
    throw error;
  }

  project.provide("postgresAdminUrl", adminUrl);
  project.provide("redisUrl", redis.value.url);
  return stopAll;
}
