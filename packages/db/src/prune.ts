import type { SqlPool } from "./client";

/** Rows one retention statement deletes at most: short transactions, bounded WAL and locks, whatever the backlog. */
export const pruneBatchSize = 5_000;

/**
 * A retention's deletion: runs `statement`, which deletes at most `$2` rows of those created
 * before `$1` (a `timestamp(3)` in UTC), until a run deletes none, and returns how many it deleted.
 * A large backlog (a first run, a lowered retention) is cleared in many short transactions, never
 * by one huge DELETE. Not "until fewer than `batchSize`": a statement that reads the oldest
 * `batchSize` rows by id may find a newer row among them (committed late) and delete fewer,
 * with older rows still behind it. The statement is its table owner's (audit, messages).
 */
export async function pruneInBatches(
  sql: Pick<SqlPool, "query">,
  statement: { name: string; text: string },
  olderThan: Date,
  batchSize = pruneBatchSize,
): Promise<number> {
  let deleted = 0;
  for (;;) {
    // The columns hold UTC without a zone; the ISO string's zone is ignored by the cast.
    const result = await sql.query({ ...statement, values: [olderThan.toISOString(), batchSize] });
    const count = result.rowCount ?? 0;
    deleted += count;
    if (count === 0) return deleted;
  }
}
