export { createDatabase, type Database, type SqlPool, sqlPoolOf } from "./client";
export * from "./generated/client";
export { defaultMigrationsDir, MigrationError, type MigrationResult, migrate } from "./migrate";
