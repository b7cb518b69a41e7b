import type { SqlPool } from "@postern/db";

/** Rows one statement deletes at most: short transactions, bounded WAL and locks, whatever the backlog. */
export const auditPruneBatchSize = 5_000;

/**
 * The oldest `$2` events by id, of which those created before the cutoff are deleted. Walking the
 * primary key from its low end bounds each statement to `$2` rows read, with no index on
 * `createdAt` (it would cost every audit write and serve only this): ids come from a sequence, so
 * the oldest ids are the oldest events, give or take the seconds a transaction stays open; the
 * `createdAt` test keeps such a late-committed newer event that sits among older ids.
 */
const pruneBatchSql = `
DELETE FROM "AuditEvent"
WHERE "id" = ANY (ARRAY(SELECT "id" FROM "AuditEvent" ORDER BY "id" LIMIT $2::int))
  AND "createdAt" < $1::timestamp(3)`;

/**
 * AUDIT_RETENTION_DAYS: deletes audit events created before `olderThan`, oldest first, in
 * statements of at most `batchSize` rows, until a statement deletes none (the oldest remaining
 * events are then within the retention). Not "until fewer than `batchSize`": a newer event among
 * the oldest ids would then end every run after one statement. Returns how many were deleted.
 */
export async function pruneAuditEvents(
  sql: Pick<SqlPool, "query">,
  olderThan: Date,
  batchSize = auditPruneBatchSize,
): Promise<number> {
  let deleted = 0;
  for (;;) {
    // The column holds UTC without a zone; the ISO string's zone is ignored by the cast.
    const result = await sql.query({
      name: "postern-audit-prune",
      text: pruneBatchSql,
      values: [olderThan.toISOString(), batchSize],
    });
    const count = result.rowCount ?? 0;
    deleted += count;
    if (count === 0) return deleted;
  }
}
