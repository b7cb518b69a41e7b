import type { AuditEvent, Database, Prisma, SqlPool } from "@postern/db";
import type { AuditAction } from "./actions";

export interface AuditEntry {
  action: AuditAction;
  /** "admin", "cli", "system", "smtp:<key>", "token:<id>" */
  actor: string;
  projectId?: string | null;
  ip?: string | null;
  /** Never a secret: callers pass only what an operator may read. */
  details?: Prisma.InputJsonObject;
}

/** Database or an open transaction: audit events are written in the transaction of what they record. */
export type AuditWriter = Pick<Database, "auditEvent"> | Prisma.TransactionClient;

export function recordAudit(db: AuditWriter, entry: AuditEntry): Promise<AuditEvent> {
  return db.auditEvent.create({
    data: {
      action: entry.action,
      actor: entry.actor,
      projectId: entry.projectId ?? null,
      ip: entry.ip ?? null,
      details: entry.details ?? {},
    },
  });
}

/**
 * Many events in one raw statement (no Prisma on the SMTP hot path, where AUTH outcomes are
 * buffered and written together): rows come from arrays, so the statement text never changes and
 * is prepared once per connection. `createdAt` is the same instant in UTC for the batch, as Prisma
 * would write it (the column is `timestamp without time zone` holding UTC).
 */
export async function recordAuditMany(sql: Pick<SqlPool, "query">, entries: AuditEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await sql.query({
    name: "postern-audit-many",
    text: `INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
SELECT ($1::timestamptz AT TIME ZONE 'UTC'), t.project_id, t.actor, t.action, t.ip, t.details
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[]) WITH ORDINALITY
  AS t(project_id, actor, action, ip, details, n)
ORDER BY t.n`,
    values: [
      new Date().toISOString(),
      entries.map((entry) => entry.projectId ?? null),
      entries.map((entry) => entry.actor),
      entries.map((entry) => entry.action),
      entries.map((entry) => entry.ip ?? null),
      entries.map((entry) => JSON.stringify(entry.details ?? {})),
    ],
  });
}
