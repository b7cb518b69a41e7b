-- Indexes that each message wrote entries into for nothing. Every accepted message writes two
-- audit events (message.accepted, message.delivered) and every fresh session one more
-- (auth.success); every delivery moves its message out of the pending statuses.
--
-- The sweeper reads "Message_status_nextAttemptAt_idx" for pending messages only: delivered and
-- failed messages, nearly all of the table, no longer get entries in it.
DROP INDEX "Message_status_nextAttemptAt_idx";
CREATE INDEX "Message_status_nextAttemptAt_idx" ON "Message"("status", "nextAttemptAt")
  WHERE "status" IN ('queued', 'deferred');

-- /v1/stats counts only rejections and quota refusals in this index: message and AUTH events no
-- longer get entries in it.
DROP INDEX "AuditEvent_projectId_action_createdAt_idx";
CREATE INDEX "AuditEvent_projectId_action_createdAt_idx" ON "AuditEvent"("projectId", "action", "createdAt")
  WHERE "action" IN ('message.rejected', 'quota.exceeded');

-- No query reads audit events by time alone (lists and the live tail go by id).
DROP INDEX "AuditEvent_createdAt_idx";
