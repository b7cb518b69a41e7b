import { recordAudit } from "@postern/audit";
import { type AuthInvalidation, publishAuthInvalidation } from "@postern/auth/invalidation";
import { type Database, type Prisma, pruneInBatches, type SqlPool } from "@postern/db";
import type { Redis } from "@postern/queue";
import { z } from "zod";
import type { Actor } from "./projects";
import { domainName } from "./schemas";

/**
 * A project's suppressions (CONTRACT §9, docs/suppressions.md): addresses, or every address of a
 * domain (`*@domain`), that the project does not send to. Stored lower-case, one row per project
 * and address. Every change bumps the project's `suppressionsVersion` in its transaction and drops
 * the project's cached policy on every node (as a routes change does), so RCPT's cache
 * (SuppressionBook), keyed by that version, sees it from the next transaction on. Expired entries
 * are ignored at once and pruned by the delivery sweeper (`pruneExpiredSuppressions`).
 */

export const suppressionReasons = ["hard_bounce", "complaint", "manual", "unsubscribe"] as const;
export type SuppressionReason = (typeof suppressionReasons)[number];

/** `user@domain` or `*@domain`, lower-cased. */
export const suppressionAddress = z
  .string()
  .trim()
  .toLowerCase()
  .max(320)
  .refine(
    (address) => {
      const at = address.lastIndexOf("@");
      if (at <= 0) return false;
      const local = address.slice(0, at);
      const domain = address.slice(at + 1);
      if (local === "*") return domainName.safeParse(domain).success;
      return !/[\s@*]/.test(local) && /^[^\s@*]+$/.test(domain) && domain.includes(".");
    },
    { error: "must be an address (user@example.com) or every address of a domain (*@example.com)" },
  );

export const suppressionInputSchema = z.object({
  address: suppressionAddress,
  reason: z.enum(suppressionReasons).default("manual").describe("why; `manual` when not given"),
  expiresAt: z.iso
    .datetime({ offset: true, error: "must be an ISO 8601 date-time" })
    .nullish()
    .describe("from then on the suppression is ignored (and later pruned); unset: never"),
});
export type SuppressionInput = z.input<typeof suppressionInputSchema>;

export interface SuppressionView {
  address: string;
  reason: SuppressionReason;
  sourceMessageId: string | null;
  expiresAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface SuppressionEntry {
  address: string;
  reason: SuppressionReason;
  expiresAt?: Date | null;
  sourceMessageId?: string | null;
}

export interface SuppressionServiceDeps {
  db: Database;
  /** Where `list` reads: the API's read replica when it has one; `db` when not given. */
  reads?: Database;
  redis: Redis;
  config: { redisKeyPrefix: string };
  /** This process's caches of project policies, dropped at once (the others hear it over Redis). */
  localCaches?: { invalidate(event: AuthInvalidation): void }[];
}

const columns = {
  address: true,
  reason: true,
  sourceMessageId: true,
  expiresAt: true,
  createdAt: true,
  updatedAt: true,
} as const;

/** A row read with `columns`. */
interface Row {
  address: string;
  reason: SuppressionReason;
  sourceMessageId: string | null;
  expiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

function view(row: Row): SuppressionView {
  return {
    address: row.address,
    reason: row.reason,
    sourceMessageId: row.sourceMessageId,
    expiresAt: row.expiresAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** Not expired at `now`. */
const inEffect = (now: Date) => ({ OR: [{ expiresAt: null }, { expiresAt: { gt: now } }] });

export function createSuppressionService({
  db,
  reads = db,
  redis,
  config,
  localCaches,
}: SuppressionServiceDeps) {
  const announce = (projectId: string) => {
    const event: AuthInvalidation = { kind: "project", projectId };
    for (const cache of localCaches ?? []) cache.invalidate(event);
    // Committed already: without Redis the change stands and the policy caches' TTL bounds how
    // long another node keeps the old version.
    return publishAuthInvalidation(redis, config.redisKeyPrefix, event).catch(() => {});
  };

  return {
    /**
     * The suppressions in effect, by address; `q`: those whose address contains it. `after`: the
     * last address of the previous page.
     */
    async list(
      projectId: string,
      query: { q?: string; after?: string; limit: number },
    ): Promise<{ items: SuppressionView[]; nextCursor: string | null }> {
      const rows = await reads.suppression.findMany({
        where: {
          projectId,
          ...inEffect(new Date()),
          ...(query.q ? { address: { contains: query.q.toLowerCase() } } : {}),
          ...(query.after ? { AND: [{ address: { gt: query.after } }] } : {}),
        },
        orderBy: { address: "asc" },
        take: query.limit + 1,
        select: columns,
      });
      const page = rows.slice(0, query.limit);
      return {
        items: page.map(view),
        nextCursor: rows.length > query.limit ? (page.at(-1)?.address ?? null) : null,
      };
    },

    /**
     * Adds the entries, or replaces reason, expiry and source of those already there. Undefined when
     * the project does not exist.
     */
    async add(
      projectId: string,
      entries: SuppressionEntry[],
      by: Actor,
    ): Promise<{ added: string[]; updated: string[]; items: SuppressionView[] } | undefined> {
      if (entries.length === 0) return { added: [], updated: [], items: [] };
      const outcome = await db.$transaction(async (tx) => {
        const project = await tx.project.findUnique({ where: { id: projectId }, select: { id: true } });
        if (!project) return undefined;
        const outcome = await writeSuppressions(tx, projectId, entries);
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "suppression.added",
          details: {
            // An import of thousands is one event: its counts and the first addresses.
            added: outcome.added.length,
            updated: outcome.updated.length,
            addresses: entries.slice(0, 20).map((e) => e.address),
            reasons: [...new Set(entries.map((e) => e.reason))],
          },
        });
        return outcome;
      });
      if (outcome) await announce(projectId);
      return outcome;
    },

    /** False when the project has no such suppression. */
    async remove(projectId: string, address: string, by: Actor): Promise<boolean> {
      const removed = await db.$transaction(async (tx) => {
        const { count } = await tx.suppression.deleteMany({ where: { projectId, address } });
        if (count === 0) return false;
        await bumpVersion(tx, projectId);
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "suppression.removed",
          details: { address },
        });
        return true;
      });
      if (removed) await announce(projectId);
      return removed;
    },
  };
}
export type SuppressionService = ReturnType<typeof createSuppressionService>;

type Tx = Prisma.TransactionClient;

function bumpVersion(tx: Tx, projectId: string) {
  return tx.project.update({
    where: { id: projectId },
    data: { suppressionsVersion: { increment: 1 } },
    select: { id: true },
  });
}

async function writeSuppressions(tx: Tx, projectId: string, entries: SuppressionEntry[]) {
  // The last entry for an address wins, as it would one by one.
  const byAddress = new Map(entries.map((e) => [e.address.toLowerCase(), e]));
  const existing = new Set(
    (
      await tx.suppression.findMany({
        where: { projectId, address: { in: [...byAddress.keys()] } },
        select: { address: true },
      })
    ).map((row) => row.address),
  );
  const items: SuppressionView[] = [];
  for (const [address, entry] of byAddress) {
    const data = {
      reason: entry.reason,
      expiresAt: entry.expiresAt ?? null,
      sourceMessageId: entry.sourceMessageId ?? null,
    };
    const row = await tx.suppression.upsert({
      where: { projectId_address: { projectId, address } },
      create: { projectId, address, ...data },
      update: data,
      select: columns,
    });
    items.push(view(row));
  }
  await bumpVersion(tx, projectId);
  const addresses = [...byAddress.keys()];
  return {
    added: addresses.filter((a) => !existing.has(a)),
    updated: addresses.filter((a) => existing.has(a)),
    items,
  };
}

/**
 * The hook for whatever learns that an address must not be mailed again (a bounce or complaint
 * that arrives later, an unsubscribe): adds (or refreshes) `address` for the project with the
 * message it came from, audited as `system`, and drops the project's cached policy everywhere.
 * The worker's own 5.1.x suppressions are written by its record statement instead
 * (packages/messages delivery-store.ts), in the same transaction as the recipient's failure.
 */
export async function suppressRecipient(
  deps: SuppressionServiceDeps,
  projectId: string,
  address: string,
  reason: SuppressionReason,
  sourceMessageId: string | null,
): Promise<boolean> {
  const outcome = await createSuppressionService(deps).add(
    projectId,
    [{ address: address.toLowerCase(), reason, sourceMessageId }],
    { actor: "system", ip: null },
  );
  return outcome !== undefined;
}

/** Why a recipient is refused: the suppression that matched it. */
export interface SuppressionVerdict {
  /** The entry that matched: the address itself, or `*@domain`. */
  address: string;
  reason: SuppressionReason;
}

interface ProjectVerdicts {
  version: number;
  /** Lower-case recipient → its verdict (null: not suppressed) and until when it holds. */
  byRecipient: Map<string, { verdict: SuppressionVerdict | null; until: number }>;
}

/**
 * Per project, the verdicts of the recipients looked up at the project's suppressions version
 * (which the SMTP session and HTTP submission read with the project's policy, refreshed at each
 * MAIL): one query per new recipient and version, none at all for a project whose version is 0
 * (never had a suppression). A new version drops the project's verdicts; a verdict from an
 * entry that expires holds until then.
 */
export class SuppressionBook {
  private readonly byProject = new Map<string, ProjectVerdicts>();

  constructor(
    private readonly db: Pick<Database, "suppression">,
    private readonly maxRecipientsPerProject = 10_000,
  ) {}

  async verdictFor(
    projectId: string,
    version: number,
    recipient: string,
  ): Promise<SuppressionVerdict | null> {
    if (version === 0) return null;
    const address = recipient.toLowerCase();
    let project = this.byProject.get(projectId);
    if (!project || project.version < version) {
      project = { version, byRecipient: new Map() };
      this.byProject.set(projectId, project);
    }
    const now = Date.now();
    const cached = project.byRecipient.get(address);
    if (cached && cached.until > now) return cached.verdict;
    const domain = address.slice(address.lastIndexOf("@") + 1);
    const rows = await this.db.suppression.findMany({
      where: { projectId, address: { in: [address, `*@${domain}`] }, ...inEffect(new Date(now)) },
      select: { address: true, reason: true, expiresAt: true },
    });
    // The address's own entry names the reason before its domain's.
    const row = rows.find((r) => r.address === address) ?? rows[0];
    const verdict = row ? { address: row.address, reason: row.reason } : null;
    const until = row?.expiresAt ? row.expiresAt.getTime() : Number.POSITIVE_INFINITY;
    if (project.byRecipient.size >= this.maxRecipientsPerProject) {
      const oldest = project.byRecipient.keys().next().value;
      if (oldest !== undefined) project.byRecipient.delete(oldest);
    }
    project.byRecipient.set(address, { verdict, until });
    return verdict;
  }
}

const pruneBatch = {
  name: "postern-suppression-prune",
  text: `
DELETE FROM "Suppression"
WHERE ("projectId", "address") IN (
  SELECT "projectId", "address" FROM "Suppression" WHERE "expiresAt" < $1::timestamp(3) LIMIT $2::int)`,
};

/**
 * Deletes the suppressions that expired before `now` (already ignored by every lookup), in
 * statements of at most `batchSize` rows (packages/db `pruneInBatches`). Returns how many.
 */
export function pruneExpiredSuppressions(
  sql: Pick<SqlPool, "query">,
  now: Date,
  batchSize?: number,
): Promise<number> {
  return pruneInBatches(sql, pruneBatch, now, batchSize);
}
