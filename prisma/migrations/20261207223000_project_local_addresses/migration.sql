-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "localAddresses" TEXT[] DEFAULT ARRAY[]::TEXT[];
