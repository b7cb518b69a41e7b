import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "./generated/client";

export type Database = PrismaClient;
/** The node-postgres pool under a Database, for hot paths that are one fixed statement. */
export type SqlPool = pg.Pool;

const pools = new WeakMap<Database, SqlPool>();

export interface DatabaseOptions {
  /** Connections in the pool: a role never needs more than it has concurrent transactions. */
  max?: number;
  /**
   * Run prepared statements with their generic plan (`plan_cache_mode = force_generic_plan`), never
   * replanning them for each execution's parameters. For a process whose every query is one of
   * Postern's fixed raw statements, planned to reach rows by key whatever the parameters (the
   * delivery worker): PostgreSQL otherwise replanned the worker's load statement at every run,
   * because an array parameter makes the custom plan look cheaper, and the planning took longer
   * than the execution. Not for processes running Prisma, whose parameterized queries
   * (statistics, listings) need plans fitted to their parameters.
   */
  genericPlans?: boolean;
  /**
   * Give up opening a connection (TCP, TLS, authentication) after this long; unset: wait as long
   * as the network does. For a server whose failure must be answered, not waited out (the API's
   * read replica).
   */
  connectTimeoutMs?: number;
}

/**
 * The Prisma client over node-postgres (no query-engine binary). The pool is Postern's, so raw
 * statements (`sqlPoolOf`) share its connections; `$disconnect` ends it.
 */
export function createDatabase(connectionString: string, options: DatabaseOptions = {}): Database {
  const pool = new pg.Pool({
    connectionString,
    max: options.max ?? 20,
    ...(options.connectTimeoutMs ? { connectionTimeoutMillis: options.connectTimeoutMs } : {}),
    ...(options.genericPlans ? { options: "-c plan_cache_mode=force_generic_plan" } : {}),
  });
  // An idle connection that breaks (PostgreSQL restarted) must not crash the process; the next
  // query reports the failure to its caller.
  pool.on("error", () => {});
  // Nor one that is checked out (a checked-out client loses the pool's listener): a Prisma
  // transaction between two statements, or `forEachRow` when PostgreSQL's FATAL arrives in the
  // same read as the statement's end, would otherwise emit an unheard 'error' (seen in
  // apps/worker/test/loss.test.ts). The statement in flight, if any, still fails to its caller,
  // and a broken connection is dropped by the pool when it ends.
  pool.on("connect", (client) => {
    client.on("error", () => {});
  });
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

/**
 * Runs one statement and hands each row to `onRow` as it is read, without keeping the rows: what
 * a row holds can be freed while the next ones arrive (node-postgres keeps every row of a
 * result until its end otherwise). Rejects with the statement's error, or with the first error
 * `onRow` threw, once the statement has ended.
 */
export async function forEachRow<Row>(
  pool: Pick<SqlPool, "connect">,
  statement: { name?: string; text: string; values?: unknown[] },
  onRow: (row: Row) => void,
): Promise<void> {
  const client = await pool.connect();
  let failure: unknown;
  try {
    await new Promise<void>((resolve, reject) => {
      const query = new pg.Query(statement);
      // A 'row' listener without a callback is what makes node-postgres drop each row after it.
      query.on("row", (row: Row) => {
        if (failure !== undefined) return;
        try {
          onRow(row);
        } catch (error) {
          failure = error;
        }
      });
      query.on("end", () => resolve());
      query.on("error", reject);
      client.query(query);
    });
  } catch (error) {
    // As pool.query does: a connection whose statement failed is not reused.
    client.release(error as Error);
    throw error;
  }
  client.release();
  if (failure !== undefined) throw failure;
}
