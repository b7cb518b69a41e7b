import type { Database } from "@postern/db";

declare module "fastify" {
  interface FastifyContextConfig {
    /** The route reads from the read replica: see `replicaRead`. */
    readsReplica?: boolean;
  }
}

/**
 * The route option of a route whose reads go to `RouteDependencies.reads` (the read replica when
 * DATABASE_REPLICA_URL is set): when such a route fails and the replica does not answer, the
 * error handler answers `503 replica_unavailable` rather than an internal error.
 */
export const replicaRead = { config: { readsReplica: true } } as const;

/** Where the API reads from: `reads` is the replica, or `db` itself when there is none. */
export interface ReadStores {
  db: Database;
  reads: Database;
}

/**
 * One object read from the replica, and from the primary when the replica does not have it
 * (yet: replication lag): a client that has just created a message and asks for it by id finds it.
 * A hit on the replica may still be behind the primary (a status not yet replayed).
 */
export async function readById<T>(
  stores: ReadStores,
  read: (db: Database) => Promise<T>,
  found: (value: T) => boolean,
): Promise<T> {
  const fromReplica = await read(stores.reads);
  if (found(fromReplica) || stores.reads === stores.db) return fromReplica;
  return read(stores.db);
}
