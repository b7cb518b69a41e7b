-- CreateEnum
CREATE TYPE "ReturnPath" AS ENUM ('sender', 'verp');

-- AlterEnum
-- A delivered recipient later reported failed (a DSN) or unwanted (a feedback report) by the
-- inbound role (docs/bounces.md). The message's own status does not change.
ALTER TYPE "RecipientStatus" ADD VALUE 'bounced';
ALTER TYPE "RecipientStatus" ADD VALUE 'complained';

-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "returnPath" "ReturnPath" NOT NULL DEFAULT 'sender';
