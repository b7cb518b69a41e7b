-- GET /v1/messages?from= : a sender's messages, newest first, read from the index in page order.
-- CreateIndex
CREATE INDEX "Message_projectId_mailFrom_createdAt_id_idx" ON "Message"("projectId", "mailFrom", "createdAt" DESC, "id" DESC);

-- GET /v1/messages?to= : the messages that have this recipient (then checked against the project).
-- CreateIndex
CREATE INDEX "MessageRecipient_address_idx" ON "MessageRecipient"("address");
