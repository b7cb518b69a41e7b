-- CreateIndex
CREATE INDEX "AuditEvent_projectId_action_createdAt_idx" ON "AuditEvent"("projectId", "action", "createdAt");
