-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "dedupWindowSeconds" INTEGER NOT NULL DEFAULT 0;
