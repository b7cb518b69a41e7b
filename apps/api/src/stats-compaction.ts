import { type Database, sqlPoolOf } from "@postern/db";

/**
 * MessageStatsHour gets up to one row per database connection (shard) for each project, hour and
 * status. Once an hour is past, its shards are folded into shard 0, so the table keeps about four
 * rows per project-hour and the stats query reads few rows however long Postern runs.
 *
 * One statement deletes exactly the rows it sums: a trigger adding to a shard of an old hour
 * concurrently (a late status change) either commits before (and is summed) or creates a new
 * shard row after (folded next time). Several API processes may run it at once.
 */
export async function compactMessageStats(db: Database, before: Date): Promise<number> {
  // On the pool, not through Prisma: run at start by every API process, a Prisma statement would
  // load Prisma's query compiler into a process that may serve no other Prisma query for a long
  // time (docs/operations.md, Memory).
  const { rowCount } = await sqlPoolOf(db).query(
    `WITH folded AS (
      DELETE FROM "MessageStatsHour" WHERE hour < $1::timestamp(3) AND shard <> 0
      RETURNING "projectId", hour, status, count
    )
    INSERT INTO "MessageStatsHour" ("projectId", hour, status, shard, count)
    SELECT "projectId", hour, status, 0, sum(count)::int FROM folded GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT ("projectId", hour, status, shard)
    DO UPDATE SET count = "MessageStatsHour".count + EXCLUDED.count`,
    // UTC, as Prisma writes "hour": an ISO string, so the session's time zone cannot shift it.
    [before.toISOString()],
  );
  return rowCount ?? 0;
}

const compactionIntervalMs = 10 * 60_000;
/** Hours this recent still take many concurrent updates: leave their shards alone. */
const settleMs = 2 * 60 * 60_000;

/** Runs the compaction now and then every 10 minutes until stopped; failures are logged, not fatal. */
export function scheduleStatsCompaction(db: Database, onError: (error: Error) => void): () => void {
  const run = () => {
    compactMessageStats(db, new Date(Date.now() - settleMs)).catch(onError);
  };
  const timer = setInterval(run, compactionIntervalMs);
  timer.unref();
  run();
  return () => clearInterval(timer);
}
