import { type AuditEntry, recordAudit, recordAuditMany } from "@postern/audit";
import { type Database, sqlPoolOf } from "@postern/db";
import { createGroupCommit } from "@postern/messages";
import type { Logger } from "@postern/telemetry";

/**
 * Audit events that record no stored state (AUTH outcomes, refusals) are written off the reply
 * path, with the message store's group commit (`createGroupCommit`): the events recorded while a
 * statement is being written go together in the next one, a statement at most every `spacingMs`,
 * and an event PostgreSQL refuses is written alone so that it costs its neighbours nothing.
 * `message.accepted` is NOT written here: it commits in the accept transaction.
 *
 * An event that repeats while a condition lasts (an AUTH refused while its client is blocked) is
 * written once per subject and window: the first at once, with `details.attempts` 1; the later
 * ones of that window are only counted, and the count is written into the same row when the window
 * ends (and at `flush`, so at shutdown). One row per subject, window and process, however hard a
 * client hammers.
 */
export function createAuditBuffer(
  db: Database,
  log: Logger,
  options: { spacingMs?: number; maxEvents?: number } = {},
) {
  const sql = sqlPoolOf(db);
  const events = createGroupCommit<AuditEntry, void>(
    async (batch) => {
      await recordAuditMany(sql, batch);
      return batch.map(() => undefined);
    },
    { maxItems: options.maxEvents ?? 500, spacingMs: options.spacingMs ?? 20 },
  );
  // Statements run one at a time, in order: the last event's promise settles after every other's.
  let lastEvent: Promise<void> = Promise.resolve();
  const windows = new Map<string, RepeatedWindow>();

  const storeCount = (window: RepeatedWindow) => {
    // Nothing new to count: still wait for the row itself, which `flush` promises is stored.
    if (window.attempts === window.stored) return window.row.then(() => {});
    const attempts = window.attempts;
    window.stored = attempts;
    // Chained on the row, so that counts are written in order.
    window.row = window.row.then(async (row) => {
      if (!row) return row;
      await db.auditEvent
        .update({ where: { id: row.id }, data: { details: { ...window.details, attempts } } })
        .catch((error: Error) =>
          log.error(
            { err: error, auditEventId: row.id.toString(), attempts },
            "audit count could not be stored",
          ),
        );
      return row;
    });
    return window.row.then(() => {});
  };

  const closeWindow = (subject: string, window: RepeatedWindow) => {
    clearTimeout(window.timer);
    if (windows.get(subject) === window) windows.delete(subject);
    return storeCount(window);
  };

  return {
    record(entry: AuditEntry): void {
      lastEvent = events.submit(entry).catch(
        // PostgreSQL is down: the event survives in the log (events hold no secrets).
        (error: Error) => log.error({ err: error, auditEvents: [entry] }, "audit events could not be stored"),
      );
    },
    /**
     * Records `entry` if no window of `subject` is open (and opens one until `until`, epoch ms),
     * else counts it into that window's row. Says whether it was recorded.
     */
    recordOncePerWindow(subject: string, until: number, entry: AuditEntry): boolean {
      const open = windows.get(subject);
      if (open && open.until > Date.now()) {
        open.attempts++;
        return false;
      }
      if (open) void closeWindow(subject, open);
      const details = { ...entry.details, attempts: 1 };
      const window: RepeatedWindow = {
        until,
        attempts: 1,
        stored: 1,
        details,
        row: recordAudit(db, { ...entry, details }).catch((error: Error) => {
          log.error({ err: error, auditEvents: [entry] }, "audit events could not be stored");
          return undefined;
        }),
        timer: setTimeout(() => void closeWindow(subject, window), Math.max(0, until - Date.now())).unref(),
      };
      windows.set(subject, window);
      return true;
    },
    /** Writes everything recorded so far, counts included; resolves when it is stored (or logged as lost). */
    async flush(): Promise<void> {
      await Promise.all([lastEvent, ...[...windows.values()].map(storeCount)]);
    },
  };
}

interface RepeatedWindow {
  /** Epoch ms. */
  until: number;
  attempts: number;
  /** The count last written into the row. */
  stored: number;
  details: AuditEntry["details"];
  row: Promise<{ id: bigint } | undefined>;
  timer: NodeJS.Timeout;
}

export type AuditBuffer = ReturnType<typeof createAuditBuffer>;
