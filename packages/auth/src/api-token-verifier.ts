import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue/redis";
import { ok, type Refusal, type Result, refuse } from "@postern/result";
import { type AuthInvalidation, listenForAuthInvalidations } from "./invalidation";
import { hashApiToken } from "./keys";
import {
  type ProjectPolicy,
  type ProjectPolicyRow,
  projectPolicySelect,
  toProjectPolicy,
} from "./project-policy";

/** Who a project API token speaks for. */
export interface ApiTokenHolder {
  tokenId: string;
  projectId: string;
}

/** PostgreSQL did not answer: a temporary failure, never a success. */
type Unavailable = Refusal<"unavailable", { error: Error }>;

export type ApiTokenVerification = Result<ApiTokenHolder, "unknown_or_revoked"> | Unavailable;
export type ProjectPolicyLookup = Result<ProjectPolicy, "unknown_project"> | Unavailable;

export interface ApiTokenVerifierOptions {
  db: Database;
  /** REDIS_KEY_PREFIX: names the invalidation channel. */
  keyPrefix: string;
  /** How long a token's holder and a project's policy are remembered. */
  cacheTtlMs: number;
  /** Largest number of remembered tokens, and of remembered projects (oldest dropped first). */
  maxCacheEntries?: number;
  /** A token's `lastUsedAt` could not be written (bookkeeping: the request goes on). */
  onBookkeepingError?: (error: Error) => void;
}

export interface ApiTokenVerifier {
  verify(token: string): Promise<ApiTokenVerification>;
  /**
   * The same check by the token's SHA-256 (`hashApiToken`), for a holder that keeps the digest
   * rather than the token: a dashboard session (apps/api/src/sessions.ts).
   */
  verifyDigest(digest: string): Promise<ApiTokenVerification>;
  /** The policy HTTP submission applies, remembered as the SMTP credential verifier remembers it. */
  projectPolicy(projectId: string): Promise<ProjectPolicyLookup>;
  invalidate(event: AuthInvalidation): void;
  /**
   * Listens for invalidations published by any node, the API or the CLI; nothing is remembered
   * until the subscription is made, nor while its connection is down.
   */
  subscribe(subscriber: Redis): Promise<void>;
}

/** Writing lastUsedAt on every request would turn each read into a write: once a minute is enough. */
const lastUsedResolutionMs = 60_000;

interface Remembered<T> {
  value: T;
  expiresAt: number;
}

/**
 * API token checks for the `/v1` routes. A token is looked up by its SHA-256 (tokens are random,
 * 192 bits: no slow hash needed), and the answer remembered for `cacheTtlMs` under that digest,
 * with the policy of the token's project: a keep-alive client sending a message per request would
 * otherwise pay two database round trips per message that an SMTP client pays once per
 * connection. Revocation, suspension and project changes published on Redis
 * (`publishAuthInvalidation`) drop entries on every node at once; the TTL bounds how long a change
 * written straight into the database goes unseen. Unknown and revoked tokens are not remembered:
 * each costs one indexed read, as before.
 */
export function createApiTokenVerifier(options: ApiTokenVerifierOptions): ApiTokenVerifier {
  const { db, cacheTtlMs } = options;
  const maxEntries = options.maxCacheEntries ?? 100_000;
  const holders = new Map<string, Remembered<ApiTokenHolder>>();
  const policies = new Map<string, Remembered<ProjectPolicy>>();
  const lastRecordedUse = new Map<string, number>();
  // Only while invalidations are heard is anything remembered: with Redis down, every request
  // reads PostgreSQL, as it would with no cache at all.
  let listening = false;
  // Bumped by every invalidation: a read that began before one must not be remembered after it.
  let generation = 0;

  function remember<T>(cache: Map<string, Remembered<T>>, key: string, value: T) {
    if (!listening) return;
    if (cache.size >= maxEntries) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    cache.set(key, { value, expiresAt: Date.now() + cacheTtlMs });
  }

  function fresh<T>(cache: Map<string, Remembered<T>>, key: string): T | undefined {
    const entry = cache.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt > Date.now()) return entry.value;
    cache.delete(key);
    return undefined;
  }

  function recordUse(tokenId: string) {
    const now = Date.now();
    if (now - (lastRecordedUse.get(tokenId) ?? 0) < lastUsedResolutionMs) return;
    if (lastRecordedUse.size >= maxEntries) lastRecordedUse.clear();
    lastRecordedUse.set(tokenId, now);
    db.apiToken
      .update({ where: { id: tokenId }, data: { lastUsedAt: new Date(now) } })
      .catch((error: Error) => options.onBookkeepingError?.(error));
  }

  function invalidate(event: AuthInvalidation) {
    if (event.kind === "credential") return;
    generation++;
    for (const [digest, entry] of holders) {
      const matches =
        event.kind === "apiToken"
          ? entry.value.tokenId === event.tokenId
          : entry.value.projectId === event.projectId;
      if (matches) holders.delete(digest);
    }
    if (event.kind === "project") policies.delete(event.projectId);
  }

  function forgetAll() {
    generation++;
    holders.clear();
    policies.clear();
  }

  async function verifyDigest(digest: string): Promise<ApiTokenVerification> {
    let holder = fresh(holders, digest);
    if (!holder) {
      const startedAt = generation;
      let row: { id: string; projectId: string; revokedAt: Date | null; project: ProjectPolicyRow } | null;
      try {
        row = await db.apiToken.findUnique({
          where: { tokenHash: digest },
          select: { id: true, projectId: true, revokedAt: true, project: { select: projectPolicySelect } },
        });
      } catch (error) {
        return refuse("unavailable", { error: error as Error });
      }
      // The row was found by its digest through a unique index: equal by construction.
      if (!row || row.revokedAt) return refuse("unknown_or_revoked");
      holder = { tokenId: row.id, projectId: row.projectId };
      if (generation === startedAt) {
        remember(holders, digest, holder);
        remember(policies, row.projectId, toProjectPolicy(row.project));
      }
    }
    recordUse(holder.tokenId);
    return ok(holder);
  }

  return {
    verify: (token) => verifyDigest(hashApiToken(token)),
    verifyDigest,

    async projectPolicy(projectId) {
      const cached = fresh(policies, projectId);
      if (cached) return ok(cached);
      const startedAt = generation;
      try {
        const row = await db.project.findUnique({ where: { id: projectId }, select: projectPolicySelect });
        if (!row) return refuse("unknown_project");
        const policy = toProjectPolicy(row);
        if (generation === startedAt) remember(policies, projectId, policy);
        return ok(policy);
      } catch (error) {
        return refuse("unavailable", { error: error as Error });
      }
    },

    invalidate,

    async subscribe(subscriber) {
      subscriber.on("close", () => {
        listening = false;
        forgetAll();
      });
      await listenForAuthInvalidations(subscriber, options.keyPrefix, { invalidate, forgetAll });
      listening = true;
      // ioredis subscribes again on reconnecting, right after "ready".
      subscriber.on("ready", () => {
        listening = true;
      });
    },
  };
}
