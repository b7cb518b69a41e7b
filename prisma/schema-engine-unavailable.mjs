#!/usr/bin/env node
// Stand-in for Prisma's native schema engine, which cannot be downloaded on offline machines.
// `prisma generate` only needs the path to exist; migrations are applied by Postern itself.
console.error(
  "the schema engine is not available here; migrations are applied by `postern start` (packages/db migrate)",
);
process.exit(1);
