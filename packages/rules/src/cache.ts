import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue/redis";
import { type CompiledRules, compileRules } from "./compile";
import { readRuleSet, rulesInvalidationChannel } from "./rule-sets";

/**
 * Each project's compiled rules, per process, so that the SMTP path does not query PostgreSQL per
 * RCPT nor compile patterns per message. A change published on Redis (rule-sets.ts) drops the
 * project's entry on every node; `ttlMs` bounds how long a change that was not heard (a lost
 * subscription, a row written by hand) goes unseen. When a read after the TTL finds the same
 * version, the compiled rules are kept: compiling happens once per version.
 */
export interface RulesCache {
  /** The project's current rules; rejects when PostgreSQL cannot answer. */
  rulesOf(projectId: string): Promise<CompiledRules>;
  invalidate(projectId: string): void;
  /** Listens for changes published by any node, the API or the CLI. */
  subscribe(subscriber: Redis): Promise<void>;
}

export interface RulesCacheOptions {
  db: Pick<Database, "ruleSet">;
  keyPrefix: string;
  /** Longest a cached rule set is used without asking PostgreSQL again. */
  ttlMs?: number;
  /** Most projects remembered (oldest dropped first). */
  maxEntries?: number;
}

/** A rules change not heard over Redis takes effect within this time. */
export const defaultRulesCacheTtlMs = 30_000;

interface Entry {
  rules: CompiledRules;
  expiresAt: number;
}

export function createRulesCache(options: RulesCacheOptions): RulesCache {
  const ttlMs = options.ttlMs ?? defaultRulesCacheTtlMs;
  const maxEntries = options.maxEntries ?? 10_000;
  const entries = new Map<string, Entry>();
  const loading = new Map<string, Promise<CompiledRules>>();
  // Bumped by every invalidation: a read that began before one must not cache what it read.
  let generation = 0;

  const load = async (projectId: string, previous: CompiledRules | undefined): Promise<CompiledRules> => {
    const startedAt = generation;
    const ruleSet = await readRuleSet(options.db, projectId);
    const rules = previous?.version === ruleSet.version ? previous : compileRules(ruleSet);
    if (generation === startedAt) {
      if (!entries.has(projectId) && entries.size >= maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest !== undefined) entries.delete(oldest);
      }
      entries.set(projectId, { rules, expiresAt: Date.now() + ttlMs });
    }
    return rules;
  };

  const forgetAll = () => {
    generation++;
    entries.clear();
    loading.clear();
  };

  return {
    rulesOf(projectId) {
      const entry = entries.get(projectId);
      if (entry && entry.expiresAt > Date.now()) return Promise.resolve(entry.rules);
      // Every session of a project asking at once shares one read.
      let pending = loading.get(projectId);
      if (!pending) {
        pending = load(projectId, entry?.rules).finally(() => loading.delete(projectId));
        loading.set(projectId, pending);
      }
      return pending;
    },
    invalidate(projectId) {
      generation++;
      entries.delete(projectId);
      loading.delete(projectId);
    },
    async subscribe(subscriber) {
      const channel = rulesInvalidationChannel(options.keyPrefix);
      subscriber.on("message", (from: string, payload: string) => {
        if (from !== channel) return;
        const projectId = projectOf(payload);
        // Unreadable: drop everything rather than keep rules that may have changed.
        if (projectId) this.invalidate(projectId);
        else forgetAll();
      });
      // ioredis subscribes again by itself after a reconnection, once a subscription succeeded;
      // one that failed (Redis down at start) is made when Redis is back.
      let subscribed = false;
      const listen = () =>
        subscriber.subscribe(channel).then(() => {
          subscribed = true;
        });
      // While the subscription was down, changes may have been missed.
      let connectedOnce = subscriber.status === "ready";
      subscriber.on("ready", () => {
        if (connectedOnce) forgetAll();
        connectedOnce = true;
        if (!subscribed) listen().catch(() => {});
      });
      await listen();
    },
  };
}

function projectOf(payload: string): string | undefined {
  try {
    const event = JSON.parse(payload) as { projectId?: unknown };
    return typeof event.projectId === "string" ? event.projectId : undefined;
  } catch {
    return undefined;
  }
}
