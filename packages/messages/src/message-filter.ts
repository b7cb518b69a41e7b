import { type MessageStatus, Prisma } from "@postern/db";

/** What `GET /v1/messages` and the bulk actions select a project's messages by. */
export interface MessageFilter {
  status?: MessageStatus;
  /** The envelope sender, exactly as stored. */
  from?: string;
  /** One of the envelope recipients, exactly as stored. */
  to?: string;
  /** A substring of the Subject header, case-insensitive. */
  subject?: string;
  /** Accepted at or after. */
  createdAfter?: Date;
  /** Accepted before. */
  createdBefore?: Date;
}

/** `%`, `_` and `\` of a user's text taken literally in a LIKE pattern. */
function likeLiteral(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/**
 * The WHERE condition on `m` ("Message") of a project's messages matching `filter`. Each part has
 * its index (migration 20261207182000_message_list_filters, docs/api.md): the project's
 * (createdAt, id) order for the time range and for `subject` (no index: the scan newest first stops
 * once a page is full), (projectId, status, createdAt) for `status`, (projectId, mailFrom,
 * createdAt, id) for `from`, and the recipients' (address) index for `to`.
 */
export function messageFilterSql(projectId: string, filter: MessageFilter): Prisma.Sql {
  const parts = [Prisma.sql`m."projectId" = ${projectId}::uuid`];
  if (filter.status) parts.push(Prisma.sql`m."status" = ${filter.status}::"MessageStatus"`);
  if (filter.from !== undefined) parts.push(Prisma.sql`m."mailFrom" = ${filter.from}`);
  if (filter.to !== undefined) {
    parts.push(
      Prisma.sql`m."id" IN (SELECT r."messageId" FROM "MessageRecipient" r WHERE r."address" = ${filter.to})`,
    );
  }
  if (filter.subject !== undefined)
    parts.push(Prisma.sql`m."subject" ILIKE ${`%${likeLiteral(filter.subject)}%`}`);
  if (filter.createdAfter) parts.push(Prisma.sql`m."createdAt" >= ${utc(filter.createdAfter)}`);
  if (filter.createdBefore) parts.push(Prisma.sql`m."createdAt" < ${utc(filter.createdBefore)}`);
  return Prisma.join(parts, " AND ");
}

/** A time for the `timestamp(3)` columns, which hold UTC whatever the session's TimeZone. */
export function utc(at: Date): Prisma.Sql {
  return Prisma.sql`(${at.toISOString()}::timestamptz AT TIME ZONE 'UTC')`;
}
