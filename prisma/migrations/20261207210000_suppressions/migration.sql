-- CreateEnum
CREATE TYPE "SuppressionReason" AS ENUM ('hard_bounce', 'complaint', 'manual', 'unsubscribe');

-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "autoSuppress" BOOLEAN NOT NULL DEFAULT true,
ADD COLUMN     "suppressionsVersion" INTEGER NOT NULL DEFAULT 0;

-- CreateTable
CREATE TABLE "Suppression" (
    "projectId" UUID NOT NULL,
    "address" TEXT NOT NULL,
    "reason" "SuppressionReason" NOT NULL,
    "sourceMessageId" UUID,
    "expiresAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Suppression_pkey" PRIMARY KEY ("projectId","address")
);

-- CreateIndex
CREATE INDEX "Suppression_expiresAt_idx" ON "Suppression"("expiresAt");

-- AddForeignKey
ALTER TABLE "Suppression" ADD CONSTRAINT "Suppression_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;
