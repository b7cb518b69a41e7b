-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "routes" JSONB NOT NULL DEFAULT '[]',
ADD COLUMN     "routesVersion" INTEGER NOT NULL DEFAULT 0;
