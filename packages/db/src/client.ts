import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "./generated/client";

export type Database = PrismaClient;

/**
 * The Prisma client over node-postgres (no query-engine binary). `max` bounds the pool: a role
 * never needs more connections than it has concurrent transactions.
 */
export function createDatabase(connectionString: string, options: { max?: number } = {}): Database {
  const adapter = new PrismaPg({ connectionString, max: options.max ?? 20 });
  return new PrismaClient({ adapter });
}
