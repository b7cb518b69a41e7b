import { setTimeout as sleep } from "node:timers/promises";
import type { AuditEvent, Database } from "@postern/db";
import { type AuditFilter, matchesAuditFilter } from "./reader";

export interface AuditTailOptions {
  filter?: Pick<AuditFilter, "projectId" | "action">;
  /** Emit events after this id (resume from SSE Last-Event-ID); default: only events from now on. */
  afterId?: bigint;
  /** How often to look for new rows. */
  intervalMs?: number;
  /** How long a missing id may still turn up (an open transaction) before it counts as rolled back. */
  graceMs?: number;
  signal: AbortSignal;
}

const pageSize = 1000;
/** Ids just below the starting point that are not there yet are watched too (transactions still open). */
const startWindow = 1000n;
const maxWatchedGaps = 10_000;

/**
 * Follows the audit log as it is written, from any number of processes, by polling PostgreSQL.
 *
 * Why not LISTEN/NOTIFY: a NOTIFY takes a cluster-wide lock at commit, and `message.accepted` is
 * written in the SMTP accept transaction, so a trigger would serialise the hot path. Polling costs
 * nothing while nobody tails, and an open tail reads only rows it has not seen.
 *
 * Ids come from a sequence, so they are not commit-ordered: id 7 may commit after id 8. A plain
 * `id > last` poll would skip 7 forever. Every id skipped over is therefore remembered as a gap and
 * asked for again on each poll until it appears or `graceMs` passes (its transaction rolled back).
 */
export async function* tailAudit(
  db: Pick<Database, "auditEvent">,
  options: AuditTailOptions,
): AsyncGenerator<AuditEvent> {
  const { signal, filter = {}, intervalMs = 250, graceMs = 10_000 } = options;
  const gaps = new Map<bigint, number>();

  let highest: bigint =
    options.afterId ??
    (await db.auditEvent.findFirst({ orderBy: { id: "desc" }, select: { id: true } }))?.id ??
    0n;
  const floor = highest > startWindow ? highest - startWindow : 0n;
  const present = await db.auditEvent.findMany({
    where: { id: { gt: floor, lte: highest } },
    select: { id: true },
  });
  const presentIds = new Set(present.map((row) => row.id));
  const now = Date.now();
  for (let id = floor + 1n; id <= highest; id++) if (!presentIds.has(id)) gaps.set(id, now);

  while (!signal.aborted) {
    const rows: AuditEvent[] = await db.auditEvent.findMany({
      where: { OR: [{ id: { gt: highest } }, ...(gaps.size > 0 ? [{ id: { in: [...gaps.keys()] } }] : [])] },
      orderBy: { id: "asc" },
      take: pageSize,
    });
    const seenAt = Date.now();
    for (const row of rows) {
      if (gaps.delete(row.id)) {
        // a late commit below the highest id seen: still news
      } else if (row.id > highest) {
        // Only the ids just below this one can still be in flight; a wide jump (a resume from an
        // old Last-Event-ID over a sparse log) must not allocate one entry per id.
        const watchFrom = row.id - highest > maxWatchedGaps ? row.id - BigInt(maxWatchedGaps) : highest + 1n;
        for (let id = watchFrom; id < row.id; id++) gaps.set(id, seenAt);
        highest = row.id;
      } else {
        continue;
      }
      if (matchesAuditFilter(row, filter)) yield row;
      if (signal.aborted) return;
    }
    for (const [id, since] of gaps) {
      if (seenAt - since > graceMs || gaps.size > maxWatchedGaps) gaps.delete(id);
    }
    if (rows.length < pageSize) {
      await sleep(intervalMs, undefined, { signal }).catch(() => {});
    }
  }
}
