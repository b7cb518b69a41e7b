import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultMigrationsDir, MigrationError, migrate } from "@postern/db";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, inject, it } from "vitest";

/** A new, empty database on the test cluster (not cloned from the migrated template). */
async function emptyDatabase(): Promise<string> {
  const adminUrl = inject("postgresAdminUrl");
  const name = `m_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  await admin.end();
  return adminUrl.replace(/\/postgres$/, `/${name}`);
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

interface MigrationRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  applied_steps_count: number;
  logs: string | null;
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "postern-migrations-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

async function writeMigration(name: string, sql: string): Promise<void> {
  await mkdir(join(dir, name), { recursive: true });
  await writeFile(join(dir, name, "migration.sql"), sql);
}

describe("migrate", () => {
  it("applies the project's migrations and records them as Prisma's engine does", async () => {
    const url = await emptyDatabase();
    const result = await migrate(url);
    // Every migration of the project, in name order (later issues add their own after init).
    expect(result.applied[0]).toBe("20261121000000_init");
    expect(result.applied).toEqual([...result.applied].sort());
    const [row] = await query<MigrationRow>(
      url,
      `SELECT * FROM "_prisma_migrations" WHERE migration_name = '20261121000000_init'`,
    );
    const bytes = await readFile(join(defaultMigrationsDir(), "20261121000000_init", "migration.sql"));
    expect(row).toMatchObject({
      migration_name: "20261121000000_init",
      checksum: createHash("sha256").update(bytes).digest("hex"),
      rolled_back_at: null,
      applied_steps_count: 1,
      logs: null,
    });
    expect(row?.finished_at).toBeInstanceOf(Date);
    const tables = await query<{ table_name: string }>(
      url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    );
    expect(tables.map((t) => t.table_name)).toEqual(
      expect.arrayContaining([
        "Project",
        "SmtpCredential",
        "ApiToken",
        "Message",
        "MessageBody",
        "DeliveryAttempt",
        "AuditEvent",
      ]),
    );
  });

  it("finds prisma/migrations above the running module, and says so when there is none", () => {
    expect(defaultMigrationsDir()).toMatch(/\/prisma\/migrations$/);
    expect(() => defaultMigrationsDir(tmpdir())).toThrow(MigrationError);
  });

  it("applies in name order, and a second run applies nothing", async () => {
    const url = await emptyDatabase();
    await writeMigration("20260102000000_second", `INSERT INTO "log" VALUES ('second');`);
    await writeMigration(
      "20260101000000_first",
      `CREATE TABLE "log" ("step" TEXT); INSERT INTO "log" VALUES ('first');`,
    );
    expect((await migrate(url, dir)).applied).toEqual(["20260101000000_first", "20260102000000_second"]);
    expect(await migrate(url, dir)).toEqual({
      applied: [],
      alreadyApplied: ["20260101000000_first", "20260102000000_second"],
    });
    expect((await query<{ step: string }>(url, `SELECT step FROM "log"`)).map((r) => r.step)).toEqual([
      "first",
      "second",
    ]);
  });

  it("applies each migration exactly once when several processes start at the same moment", async () => {
    const url = await emptyDatabase();
    await writeMigration(
      "20260101000000_counter",
      `CREATE TABLE "counter" ("n" INT); INSERT INTO "counter" VALUES (1);`,
    );
    const results = await Promise.all(Array.from({ length: 5 }, () => migrate(url, dir)));
    expect(results.filter((r) => r.applied.length === 1)).toHaveLength(1);
    expect(await query(url, `SELECT * FROM "counter"`)).toHaveLength(1);
    expect(await query(url, `SELECT * FROM "_prisma_migrations"`)).toHaveLength(1);
  });

  it("refuses a migration modified after it was applied", async () => {
    const url = await emptyDatabase();
    await writeMigration("20260101000000_a", `CREATE TABLE "a" ("x" INT);`);
    await migrate(url, dir);
    await writeMigration("20260101000000_a", `CREATE TABLE "a" ("x" BIGINT);`);
    await expect(migrate(url, dir)).rejects.toThrow(/20260101000000_a was modified after it was applied/);
  });

  it("leaves no trace of a failing migration, so it can be fixed and run again", async () => {
    const url = await emptyDatabase();
    await writeMigration("20260101000000_ok", `CREATE TABLE "ok" ("x" INT);`);
    await writeMigration("20260102000000_bad", `CREATE TABLE "half" ("x" INT); SELECT no_such_function();`);
    await expect(migrate(url, dir)).rejects.toThrow(MigrationError);
    const rows = await query<MigrationRow>(url, `SELECT * FROM "_prisma_migrations"`);
    expect(rows.map((r) => r.migration_name)).toEqual(["20260101000000_ok"]);
    expect(await query(url, `SELECT to_regclass('"half"') AS t`)).toEqual([{ t: null }]);
    await writeMigration("20260102000000_bad", `CREATE TABLE "half" ("x" INT);`);
    expect((await migrate(url, dir)).applied).toEqual(["20260102000000_bad"]);
  });
});
