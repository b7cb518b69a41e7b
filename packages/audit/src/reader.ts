import type { AuditEvent, Database, Prisma } from "@postern/db";

export interface AuditFilter {
  projectId?: string;
  action?: string;
  /** Inclusive. */
  from?: Date;
  /** Exclusive. */
  to?: Date;
}

export interface AuditPage {
  items: AuditEvent[];
  /** The id to pass as `cursor` for the next (older) page; null on the last page. */
  nextCursor: string | null;
}

function where(filter: AuditFilter): Prisma.AuditEventWhereInput {
  return {
    projectId: filter.projectId,
    action: filter.action,
    createdAt: filter.from || filter.to ? { gte: filter.from, lt: filter.to } : undefined,
  };
}

/**
 * Newest first, paginated by id (keyset: `id < cursor`), so a page costs the same however deep it
 * is. The (projectId, id) and (action, id) indexes serve the usual filters.
 */
export async function listAuditEvents(
  db: Pick<Database, "auditEvent">,
  filter: AuditFilter & { cursor?: bigint; limit: number },
): Promise<AuditPage> {
  const rows = await db.auditEvent.findMany({
    where: { ...where(filter), id: filter.cursor === undefined ? undefined : { lt: filter.cursor } },
    orderBy: { id: "desc" },
    take: filter.limit + 1,
  });
  const items = rows.slice(0, filter.limit);
  const last = items.at(-1);
  return { items, nextCursor: rows.length > filter.limit && last ? last.id.toString() : null };
}

/** The JSON form of an audit event (ids as strings: a BigInt does not fit a JSON number safely). */
export function auditEventJson(event: AuditEvent) {
  return {
    id: event.id.toString(),
    createdAt: event.createdAt.toISOString(),
    projectId: event.projectId,
    actor: event.actor,
    action: event.action,
    ip: event.ip,
    details: event.details as Record<string, unknown>,
  };
}

export type AuditEventJson = ReturnType<typeof auditEventJson>;

export function matchesAuditFilter(event: AuditEvent, filter: AuditFilter): boolean {
  return (
    (filter.projectId === undefined || event.projectId === filter.projectId) &&
    (filter.action === undefined || event.action === filter.action)
  );
}
