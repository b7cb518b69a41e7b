import { createHash, createHmac, randomBytes } from "node:crypto";
import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue/redis";
import { type Ok, ok, type Refusal, refuse } from "@postern/result";
import bcrypt from "bcrypt";
import { type RateLimiterAbstract, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { clientAddress } from "./client-address";
import { type AuthInvalidation, listenForAuthInvalidations } from "./invalidation";
import { smtpKeyPrefix } from "./keys";
import {
  type ProjectPolicy,
  type ProjectPolicyRow,
  projectPolicySelect,
  toProjectPolicy,
} from "./project-policy";

export interface AuthenticatedClient {
  credentialId: string;
  /** The API key (SMTP username): public, safe to log and audit. */
  key: string;
  project: ProjectPolicy;
}

/** Expected outcomes are values (packages/result); the SMTP app maps each reason to a reply and audit action. */
export type VerificationOutcome =
  | Ok<{ client: AuthenticatedClient; cached: boolean }>
  | Refusal<"unknown_key" | "bad_secret", { projectId?: string }>
  | Refusal<"revoked" | "suspended", { projectId: string }>
  /**
   * Too many failures from this client address (`ip`), or for this key from this address (`key`);
   * `reachedNow` when this attempt was a failure that spent the last point of the allowance
   * (otherwise it was refused without checking the secret). `address` is the client address as
   * counted (IPv6 by /64).
   */
  | Refusal<
      "blocked",
      { scope: "ip" | "key"; address: string; msBeforeNext: number; reachedNow: boolean; projectId?: string }
    >
  | Unavailable;

/** A session already authenticated asks again before each transaction: still allowed? */
export type CurrentStanding =
  | Ok<AuthenticatedClient>
  | Refusal<"revoked" | "suspended" | "unknown_key", { projectId: string }>
  | Unavailable;

/** PostgreSQL or Redis did not answer: a temporary failure, never a success. */
type Unavailable = Refusal<"unavailable", { error: Error }>;

export interface CredentialVerifierOptions {
  db: Database;
  /** Fail-fast connection (bounded retries) for the failure limiters. */
  redis: Redis;
  keyPrefix: string;
  cacheTtlMs: number;
  /** Failed attempts allowed per client address (IPv4, or IPv6 /64) in a window. */
  failuresPerIp: number;
  /** Failed attempts allowed for one key from one client address in a window. */
  failuresPerKey: number;
  /** Window of the failure limiters. */
  failureWindowSeconds?: number;
  /** Largest number of remembered verifications (oldest dropped first). */
  maxCacheEntries?: number;
  /** Called before each bcrypt comparison (a metric: what brute force costs in CPU). */
  onSecretCompared?: () => void;
}

export interface CredentialVerifier {
  verify(key: string, secret: string, ip: string): Promise<VerificationOutcome>;
  standing(client: AuthenticatedClient): Promise<CurrentStanding>;
  invalidate(event: AuthInvalidation): void;
  /** Listens for invalidations published by any node, the API or the CLI. */
  subscribe(subscriber: Redis): Promise<void>;
  readonly cacheSize: number;
}

interface Remembered {
  client: AuthenticatedClient;
  expiresAt: number;
}

/**
 * How long a key that authenticated from an address stays exempt from that address's block:
 * a week covers applications that send daily or weekly from behind a shared address.
 */
const knownPairSeconds = 7 * 24 * 3600;

const credentialWithProject = {
  id: true,
  key: true,
  secretHash: true,
  revokedAt: true,
  project: { select: projectPolicySelect },
} as const;

/**
 * SMTP credential verification. bcrypt (cost 10) costs ~64 ms of CPU, so a success is remembered
 * for `cacheTtlMs` under an HMAC of key and secret with a per-process random key: the cache never
 * holds the secret, and a memory dump does not give a value to test guesses against offline faster
 * than bcrypt would. Revocation and suspension published on Redis drop entries on every node; the
 * TTL bounds how long a change written straight into the database goes unseen.
 *
 * Brute force is throttled by client address, as Postfix's anvil and Dovecot's auth_penalty do,
 * never by key alone: a key is an identifier anyone may know, its secret has 192 random bits, and
 * a lock on the key would lock out its owner. On Redis (shared by every node), an attempt takes a
 * point from its address and one from its (address, key) pair BEFORE bcrypt runs, and is refused
 * when either allowance is spent, so parallel attempts cannot all slip past a check; a success
 * gives both points back. A key that authenticated from an address within `knownPairSeconds` is
 * not held back by that address's block (a tenant behind the NAT of an attacker keeps sending);
 * its own pair allowance still applies.
 */
export function createCredentialVerifier(options: CredentialVerifierOptions): CredentialVerifier {
  const { db, redis, keyPrefix, cacheTtlMs } = options;
  const maxEntries = options.maxCacheEntries ?? 100_000;
  const hmacKey = randomBytes(32);
  const bySecret = new Map<string, Remembered>();
  // The same entries by credential, so a session's per-transaction check is one lookup.
  const byCredential = new Map<string, Remembered>();
  const inFlight = new Map<string, Promise<VerificationOutcome>>();
  const standingInFlight = new Map<string, Promise<CurrentStanding>>();
  // Bumped by every invalidation: a verification that read the database before an invalidation
  // arrived must not put its (possibly stale) result into the cache after it.
  let generation = 0;

  const windowSeconds = options.failureWindowSeconds ?? 900;
  const failuresByAddress = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `${keyPrefix}:auth-failures:address`,
    points: options.failuresPerIp,
    duration: windowSeconds,
  });
  const failuresByPair = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `${keyPrefix}:auth-failures:pair`,
    points: options.failuresPerKey,
    duration: windowSeconds,
  });
  // The username is the client's text: hashed, so a Redis key stays short whatever it sent.
  const pairOf = (address: string, key: string) =>
    `${address}|${createHash("sha256").update(key).digest("base64url").slice(0, 22)}`;
  const knownPairKey = (pair: string) => `${keyPrefix}:auth-known:${pair}`;

  const fingerprint = (key: string, secret: string) =>
    createHmac("sha256", hmacKey).update(key).update("\0").update(secret).digest("base64url");

  const remember = (id: string, client: AuthenticatedClient) => {
    if (bySecret.size >= maxEntries) {
      const oldest = bySecret.keys().next().value;
      if (oldest !== undefined) {
        const evicted = bySecret.get(oldest);
        bySecret.delete(oldest);
        if (evicted && byCredential.get(evicted.client.credentialId) === evicted)
          byCredential.delete(evicted.client.credentialId);
      }
    }
    const entry = { client, expiresAt: Date.now() + cacheTtlMs };
    bySecret.set(id, entry);
    byCredential.set(client.credentialId, entry);
  };

  /** Takes a point (INCR on Redis: atomic across nodes) and answers the count, over the allowance or not. */
  const take = (limiter: RateLimiterAbstract, id: string) =>
    limiter.consume(id).catch((result: unknown) => {
      if (result instanceof RateLimiterRes) return result;
      throw result;
    });

  const compareSecret = (secret: string, hash: string) => {
    options.onSecretCompared?.();
    return bcrypt.compare(secret, hash);
  };

  const blocked = (
    scope: "ip" | "key",
    address: string,
    count: RateLimiterRes,
    reachedNow: boolean,
    projectId?: string,
  ): VerificationOutcome => ({
    ok: false,
    reason: "blocked",
    scope,
    address,
    msBeforeNext: count.msBeforeNext,
    reachedNow,
    ...(projectId ? { projectId } : {}),
  });

  const verifyUncached = async (
    key: string,
    secret: string,
    ip: string,
    id: string,
  ): Promise<VerificationOutcome> => {
    const startedAt = generation;
    const address = clientAddress(ip);
    const pair = pairOf(address, key);
    let outcome: VerificationOutcome;
    try {
      const [byAddress, byPair, known] = await Promise.all([
        take(failuresByAddress, address),
        take(failuresByPair, pair),
        redis.exists(knownPairKey(pair)),
      ]);
      if (byPair.consumedPoints > options.failuresPerKey) return blocked("key", address, byPair, false);
      if (!known && byAddress.consumedPoints > options.failuresPerIp)
        return blocked("ip", address, byAddress, false);
      // A key without our prefix cannot exist: no database round trip for it.
      const row = key.startsWith(smtpKeyPrefix)
        ? await db.smtpCredential.findUnique({ where: { key }, select: credentialWithProject })
        : null;
      if (!row) outcome = refuse("unknown_key");
      else if (!(await compareSecret(secret, row.secretHash)))
        outcome = refuse("bad_secret", { projectId: row.project.id });
      else if (row.revokedAt) outcome = refuse("revoked", { projectId: row.project.id });
      else if (row.project.status === "suspended")
        outcome = refuse("suspended", { projectId: row.project.id });
      else outcome = ok({ client: toClient(row), cached: false });

      if (!outcome.ok) {
        // The failure that spent the allowance sees the count equal to it (later ones see more, and
        // were refused above without bcrypt).
        if (byPair.consumedPoints === options.failuresPerKey)
          return blocked("key", address, byPair, true, projectOf(outcome));
        if (!known && byAddress.consumedPoints === options.failuresPerIp)
          return blocked("ip", address, byAddress, true, projectOf(outcome));
        return outcome;
      }
      // Bookkeeping: if Redis fails here, the success stands and the points stay counted.
      await Promise.all([
        failuresByAddress.reward(address, 1),
        failuresByPair.reward(pair, 1),
        redis.set(knownPairKey(pair), "1", "EX", knownPairSeconds),
      ]).catch(() => {});
    } catch (error) {
      return refuse("unavailable", { error: error as Error });
    }
    if (generation === startedAt) remember(id, outcome.value.client);
    // Bookkeeping only: not worth a round trip on the reply path.
    db.smtpCredential
      .update({ where: { id: outcome.value.client.credentialId }, data: { lastUsedAt: new Date() } })
      .catch(() => {});
    return outcome;
  };

  const readStanding = async (client: AuthenticatedClient): Promise<CurrentStanding> => {
    const startedAt = generation;
    try {
      const row = await db.smtpCredential.findUnique({
        where: { id: client.credentialId },
        select: credentialWithProject,
      });
      if (!row) return refuse("unknown_key", { projectId: client.project.id });
      if (row.revokedAt) return refuse("revoked", { projectId: row.project.id });
      if (row.project.status === "suspended") return refuse("suspended", { projectId: row.project.id });
      const current = toClient(row);
      if (generation === startedAt)
        byCredential.set(current.credentialId, { client: current, expiresAt: Date.now() + cacheTtlMs });
      return ok(current);
    } catch (error) {
      return refuse("unavailable", { error: error as Error });
    }
  };

  return {
    get cacheSize() {
      return bySecret.size;
    },

    async verify(key, secret, ip) {
      const id = fingerprint(key, secret);
      const hit = bySecret.get(id);
      if (hit && hit.expiresAt > Date.now()) return ok({ client: hit.client, cached: true });
      if (hit) bySecret.delete(id);
      // Many connections of one application authenticating at once share one bcrypt run.
      const pending = inFlight.get(id);
      if (pending) return pending;
      const started = verifyUncached(key, secret, ip, id).finally(() => inFlight.delete(id));
      inFlight.set(id, started);
      return started;
    },

    async standing(client) {
      const entry = byCredential.get(client.credentialId);
      if (entry && entry.expiresAt > Date.now()) return ok(entry.client);
      // Every session of a credential asks before each transaction: one query answers them all,
      // and its answer is remembered for the TTL like a verification.
      let pending = standingInFlight.get(client.credentialId);
      if (!pending) {
        pending = readStanding(client).finally(() => standingInFlight.delete(client.credentialId));
        standingInFlight.set(client.credentialId, pending);
      }
      return pending;
    },

    invalidate,

    subscribe(subscriber) {
      return listenForAuthInvalidations(subscriber, keyPrefix, { invalidate, forgetAll });
    },
  };

  function invalidate(event: AuthInvalidation) {
    if (event.kind === "apiToken") return;
    generation++;
    // A check that read the database before this event must not answer those who ask after it.
    standingInFlight.clear();
    const matches = (credentialId: string, entry: Remembered) =>
      event.kind === "credential"
        ? credentialId === event.credentialId
        : entry.client.project.id === event.projectId;
    for (const [id, entry] of bySecret) if (matches(entry.client.credentialId, entry)) bySecret.delete(id);
    for (const [id, entry] of byCredential) if (matches(id, entry)) byCredential.delete(id);
  }

  function forgetAll() {
    generation++;
    standingInFlight.clear();
    bySecret.clear();
    byCredential.clear();
  }
}

/** The project a refused attempt named, if its key was known. */
function projectOf(outcome: VerificationOutcome): string | undefined {
  return "projectId" in outcome ? outcome.projectId : undefined;
}

function toClient(row: { id: string; key: string; project: ProjectPolicyRow }): AuthenticatedClient {
  return { credentialId: row.id, key: row.key, project: toProjectPolicy(row.project) };
}
