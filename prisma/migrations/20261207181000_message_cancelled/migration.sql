-- AlterEnum
-- A message cancelled by its project or an operator before it was delivered (queued or deferred
-- → cancelled). The stats triggers count it like any other status (MessageStatsHour.status has
-- this type), and the sweeper's partial index does not include it (it is never due).
ALTER TYPE "MessageStatus" ADD VALUE 'cancelled';
