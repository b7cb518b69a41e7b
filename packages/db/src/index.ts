export { createDatabase, type Database } from "./client";
export * from "./generated/client";
export { defaultMigrationsDir, MigrationError, type MigrationResult, migrate } from "./migrate";
