import { pruneInBatches, type SqlPool } from "@postern/db";

/**
 * The oldest `$2` events by id, of which those created before the cutoff are deleted. Walking the
 * primary key from its low end bounds each statement to `$2` rows read, with no index on
 * `createdAt` (it would cost every audit write and serve only this): ids come from a sequence, so
 * the oldest ids are the oldest events, give or take the seconds a transaction stays open; the
 * `createdAt` test keeps such a late-committed newer event that sits among older ids.
 */
const pruneBatch = {
  name: "postern-audit-prune",
  text: `
DELETE FROM "AuditEvent"
WHERE "id" = ANY (ARRAY(SELECT "id" FROM "AuditEvent" ORDER BY "id" LIMIT $2::int))
  AND "createdAt" < $1::timestamp(3)`,
};

/**
 * AUDIT_RETENTION_DAYS: deletes audit events created before `olderThan`, oldest first, in
 * statements of at most `batchSize` rows (`pruneInBatches`). Returns how many were deleted.
 */
export function pruneAuditEvents(
  sql: Pick<SqlPool, "query">,
  olderThan: Date,
  batchSize?: number,
): Promise<number> {
  return pruneInBatches(sql, pruneBatch, olderThan, batchSize);
}
