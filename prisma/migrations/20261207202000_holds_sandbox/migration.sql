-- Holds and sandbox (docs/rules.md). A held message waits for its project's approve (→ queued)
-- or deny (→ denied, final); a sandbox project's messages are stored as sandboxed (final) and
-- never delivered. None of these is ever due, so the sweeper's partial index leaves them out;
-- the hold expiry reads held messages by ("projectId", "status", "createdAt"), an index that exists.
-- AlterEnum
ALTER TYPE "MessageStatus" ADD VALUE 'held';
ALTER TYPE "MessageStatus" ADD VALUE 'denied';
ALTER TYPE "MessageStatus" ADD VALUE 'sandboxed';

-- CreateEnum
CREATE TYPE "HoldExpiry" AS ENUM ('approve', 'deny');

-- CreateEnum
CREATE TYPE "ProjectMode" AS ENUM ('live', 'sandbox');

-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "holdExpiry" "HoldExpiry" NOT NULL DEFAULT 'deny',
ADD COLUMN     "holdTtlMinutes" INTEGER NOT NULL DEFAULT 1440,
ADD COLUMN     "mode" "ProjectMode" NOT NULL DEFAULT 'live';
