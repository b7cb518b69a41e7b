import { type AuditEntry, recordAuditMany } from "@postern/audit";
import { type Database, sqlPoolOf } from "@postern/db";
import type { Logger } from "@postern/telemetry";

/**
 * Audit events that record no stored state (AUTH outcomes, refusals) are written off the reply
 * path: collected for a few milliseconds and inserted with one statement. `message.accepted` is
 * NOT written here: it commits in the accept transaction.
 */
export function createAuditBuffer(
  db: Database,
  log: Logger,
  options: { delayMs?: number; max?: number } = {},
) {
  const delayMs = options.delayMs ?? 20;
  const max = options.max ?? 500;
  let pending: AuditEntry[] = [];
  let timer: NodeJS.Timeout | undefined;
  let writing: Promise<void> = Promise.resolve();
  const sql = sqlPoolOf(db);

  const flush = (): Promise<void> => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    const batch = pending;
    pending = [];
    if (batch.length === 0) return writing;
    writing = writing.then(() =>
      recordAuditMany(sql, batch).then(
        () => {},
        // PostgreSQL is down: the events survive in the log (they hold no secrets).
        (error: Error) => log.error({ err: error, auditEvents: batch }, "audit events could not be stored"),
      ),
    );
    return writing;
  };

  return {
    record(entry: AuditEntry): void {
      pending.push(entry);
      if (pending.length >= max) void flush();
      else timer ??= setTimeout(() => void flush(), delayMs);
    },
    /** Writes everything recorded so far; resolves when it is stored (or logged as lost). */
    flush,
  };
}

export type AuditBuffer = ReturnType<typeof createAuditBuffer>;
