export {
  createDatabase,
  type Database,
  type DatabaseOptions,
  forEachRow,
  type SqlPool,
  sqlPoolOf,
} from "./client";
export * from "./generated/client";
export { uuidv7 } from "./ids";
export { defaultMigrationsDir, MigrationError, type MigrationResult, migrate } from "./migrate";
export { pruneInBatches } from "./prune";
