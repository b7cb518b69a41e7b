-- CreateTable
CREATE TABLE "MessageStatsHour" (
    "projectId" UUID NOT NULL,
    "hour" TIMESTAMP(3) NOT NULL,
    "status" "MessageStatus" NOT NULL,
    "shard" INTEGER NOT NULL,
    "count" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "MessageStatsHour_pkey" PRIMARY KEY ("projectId","hour","status","shard")
);

-- AddForeignKey
ALTER TABLE "MessageStatsHour" ADD CONSTRAINT "MessageStatsHour_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Not expressible in schema.prisma: the triggers that keep "MessageStatsHour" equal to
-- count(*) of "Message" grouped by project, hour of "createdAt" and status.
--
-- Why triggers with per-backend shards: /v1/stats must not scan a day of messages, and a single
-- counter row per (project, hour, status) would be locked by every accepting transaction until
-- its commit, serialising the SMTP accept path. Each database connection adds to its own shard
-- (pg_backend_pid() % 64), so concurrent transactions almost never wait on one another; the
-- reader sums the shards. Statement-level triggers with transition tables write one row per
-- (project, hour, status) per statement, so a batched insert costs one upsert, not one per message.
-- Rows are upserted in key order so that two transactions sharing a shard cannot deadlock.

CREATE FUNCTION "postern_message_stats_apply"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO "MessageStatsHour" ("projectId", "hour", "status", "shard", "count")
    SELECT "projectId", date_trunc('hour', "createdAt"), "status", pg_backend_pid() % 64, count(*)
    FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT ("projectId", "hour", "status", "shard")
    DO UPDATE SET "count" = "MessageStatsHour"."count" + EXCLUDED."count";
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO "MessageStatsHour" ("projectId", "hour", "status", "shard", "count")
    SELECT "projectId", "hour", "status", pg_backend_pid() % 64, sum(delta)
    FROM (
      SELECT o."projectId", date_trunc('hour', o."createdAt") AS "hour", o."status", -1 AS delta
      FROM old_rows o JOIN new_rows n ON n."id" = o."id"
      WHERE (o."projectId", o."createdAt", o."status") IS DISTINCT FROM (n."projectId", n."createdAt", n."status")
      UNION ALL
      SELECT n."projectId", date_trunc('hour', n."createdAt"), n."status", 1
      FROM old_rows o JOIN new_rows n ON n."id" = o."id"
      WHERE (o."projectId", o."createdAt", o."status") IS DISTINCT FROM (n."projectId", n."createdAt", n."status")
    ) changes
    GROUP BY 1, 2, 3 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3
    ON CONFLICT ("projectId", "hour", "status", "shard")
    DO UPDATE SET "count" = "MessageStatsHour"."count" + EXCLUDED."count";
  ELSE
    -- A project's deletion cascades to its messages and its stats rows: nothing to count then.
    INSERT INTO "MessageStatsHour" ("projectId", "hour", "status", "shard", "count")
    SELECT o."projectId", date_trunc('hour', o."createdAt"), o."status", pg_backend_pid() % 64, -count(*)
    FROM old_rows o
    WHERE EXISTS (SELECT 1 FROM "Project" p WHERE p."id" = o."projectId")
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT ("projectId", "hour", "status", "shard")
    DO UPDATE SET "count" = "MessageStatsHour"."count" + EXCLUDED."count";
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER "Message_stats_insert" AFTER INSERT ON "Message"
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "postern_message_stats_apply"();
CREATE TRIGGER "Message_stats_update" AFTER UPDATE ON "Message"
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "postern_message_stats_apply"();
CREATE TRIGGER "Message_stats_delete" AFTER DELETE ON "Message"
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "postern_message_stats_apply"();

-- Messages stored before this migration.
INSERT INTO "MessageStatsHour" ("projectId", "hour", "status", "shard", "count")
SELECT "projectId", date_trunc('hour', "createdAt"), "status", 0, count(*)
FROM "Message" GROUP BY 1, 2, 3;
