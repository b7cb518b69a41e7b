import { recordAudit } from "@postern/audit";
import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue/redis";
import { ok, type Result, refuse } from "@postern/result";
import { type RuleSet, type RuleSetInput, rulesSchema } from "./schema";

/**
 * A project's rule set in PostgreSQL (table RuleSet), read and replaced with optimistic
 * concurrency: a change names the version it was based on, and is refused when another change
 * came first (two people editing the same list must not silently undo each other). Every change is
 * audited (`rules.updated`) in its transaction and announced on Redis, so that every node's cache
 * (cache.ts) drops the old rules at once.
 */

export interface RuleSetDeps {
  db: Database;
  redis: Redis;
  keyPrefix: string;
}

/** Who changes the rules, for the audit trail. */
export interface RulesActor {
  actor: string;
  ip?: string | null;
}

export type ReplaceRuleSetResult = Result<
  RuleSet,
  "not_found" | "version_conflict",
  { message: string; currentVersion?: number }
>;

export function rulesInvalidationChannel(keyPrefix: string): string {
  return `${keyPrefix}:rules-invalidation`;
}

/** The project's rules; version 0 and no rules when none were ever set. */
export async function readRuleSet(db: Pick<Database, "ruleSet">, projectId: string): Promise<RuleSet> {
  const row = await db.ruleSet.findUnique({ where: { projectId }, select: { version: true, rules: true } });
  if (!row) return { version: 0, rules: [] };
  // Written only through the schema; read through it too, so a hand-edited row fails loudly here
  // rather than judging mail by something the API would have refused.
  const rules = rulesSchema.safeParse(row.rules);
  if (!rules.success) throw new Error(`the stored rules of project ${projectId} are invalid`);
  return { version: row.version, rules: rules.data };
}

export async function replaceRuleSet(
  deps: RuleSetDeps,
  projectId: string,
  input: RuleSetInput,
  by: RulesActor,
): Promise<ReplaceRuleSetResult> {
  const conflict = (currentVersion: number) =>
    refuse("version_conflict", {
      currentVersion,
      message: `version ${input.version} is stale: the rules are at version ${currentVersion}; read them again and apply the change there`,
    });
  const outcome = await deps.db.$transaction(async (tx): Promise<ReplaceRuleSetResult> => {
    const project = await tx.project.findUnique({ where: { id: projectId }, select: { id: true } });
    if (!project) return refuse("not_found", { message: `no project ${projectId}` });
    const current = await tx.ruleSet.findUnique({ where: { projectId }, select: { version: true } });
    const currentVersion = current?.version ?? 0;
    if (currentVersion !== input.version) return conflict(currentVersion);
    const version = input.version + 1;
    // A concurrent change of the same version: the row lock makes the second statement see the
    // first one's version (update), or its row (insert), and change nothing.
    const written = current
      ? await tx.ruleSet.updateMany({
          where: { projectId, version: input.version },
          data: { version, rules: input.rules },
        })
      : await tx.ruleSet.createMany({
          data: [{ projectId, version, rules: input.rules }],
          skipDuplicates: true,
        });
    if (written.count === 0) return conflict(currentVersion + 1);
    await recordAudit(tx, {
      actor: by.actor,
      ip: by.ip ?? null,
      projectId,
      action: "rules.updated",
      details: {
        version,
        rules: input.rules.map((rule) => ({ name: rule.name, action: rule.action })),
      },
    });
    return ok({ version, rules: input.rules });
  });
  // The change is committed: without Redis it stands, and every node sees it within its cache's
  // lifetime (cache.ts) instead of at once. Failing the request would have the caller retry a
  // change that was made, into a version conflict.
  if (outcome.ok)
    await deps.redis
      .publish(
        rulesInvalidationChannel(deps.keyPrefix),
        JSON.stringify({ projectId, version: outcome.value.version }),
      )
      .catch(() => {});
  return outcome;
}
