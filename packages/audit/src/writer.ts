import type { AuditEvent, Database, Prisma } from "@postern/db";
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

export function recordAuditMany(db: AuditWriter, entries: AuditEntry[]): Promise<{ count: number }> {
  return db.auditEvent.createMany({
    data: entries.map((entry) => ({
      action: entry.action,
      actor: entry.actor,
      projectId: entry.projectId ?? null,
      ip: entry.ip ?? null,
      details: entry.details ?? {},
    })),
  });
}
