// Prisma CLI configuration. The CLI is used here only for `prisma generate`; migrations are applied
// by Postern's own runner (packages/db/src/migrate.ts), see docs/architecture.md.
import { defineConfig } from "prisma/config";

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  // env("DATABASE_URL") would throw when it is unset; generation does not need a database.
  datasource: { url: process.env.DATABASE_URL ?? "postgresql://localhost/postern" },
});
