-- CreateTable
CREATE TABLE "MessageFingerprint" (
    "projectId" UUID NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "messageId" UUID NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "MessageFingerprint_pkey" PRIMARY KEY ("projectId","fingerprint")
);

-- CreateIndex
CREATE INDEX "MessageFingerprint_expiresAt_idx" ON "MessageFingerprint"("expiresAt");

-- AddForeignKey
ALTER TABLE "MessageFingerprint" ADD CONSTRAINT "MessageFingerprint_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;
