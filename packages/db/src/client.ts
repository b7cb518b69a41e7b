import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "./generated/client";

export type Database = PrismaClient;
/** The node-postgres pool under a Database, for hot paths that are one fixed statement. */
export type SqlPool = pg.Pool;

const pools = new WeakMap<Database, SqlPool>();

/**
 * The Prisma client over node-postgres (no query-engine binary). `max` bounds the pool: a role
 * never needs more connections than it has concurrent transactions. The pool is Postern's, so
 * raw statements (`sqlPoolOf`) share its connections; `$disconnect` ends it.
 */
export function createDatabase(connectionString: string, options: { max?: number } = {}): Database {
  const pool = new pg.Pool({ connectionString, max: options.max ?? 20 });
  // An idle connection that breaks (PostgreSQL restarted) must not crash the process; the next
  // query reports the failure to its caller.
  pool.on("error", () => {});
  const db = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
  pools.set(db, pool);
  return db;
}

/** The pool a Database made with `createDatabase` queries through. */
export function sqlPoolOf(db: Database): SqlPool {
  const pool = pools.get(db);
  if (!pool) throw new Error("sqlPoolOf: this Database was not made by createDatabase");
  return pool;
}
