-- The delivery job that carries a message's first attempt: messages accepted together share one
-- job per project, so the sweeper can no longer find a message's job by the message's id alone.
-- NULL for messages accepted before: their job id is the message id. No index: the sweeper reads
-- it only with the queued rows it already selects.
ALTER TABLE "Message" ADD COLUMN "deliveryJobId" UUID;
