import { createPrivateKey } from "node:crypto";
import { recordAudit } from "@postern/audit";
// The modules used, not the package index: that brings the SMTP credential verifier to `postern domains`.
import { type AuthInvalidation, publishAuthInvalidation } from "@postern/auth/invalidation";
import { openSecret, sealSecret } from "@postern/auth/secretbox";
import type { Database, DkimKey, Domain } from "@postern/db";
import type { Redis } from "@postern/queue/redis";
import { ok, type Result, refuse } from "@postern/result";
import { createMxLookup, createTxtLookup, type MxLookup, type TxtLookup } from "./dns";
import { type DkimAlgorithm, type DkimKeyPair, generateDkimKey, importDkimKey } from "./keys";
import { type CheckedRecord, checkRecord, type DnsRecord, recordsOf } from "./records";
import type { SigningKey } from "./signature";

/**
 * A domain has at most two keys, under these selectors. Rotation adds a key under the free one;
 * the old key signs until a verify finds the new key's record, then it is dropped.
 */
export const dkimSelectors = ["pst1", "pst2"] as const;

export interface DomainServiceDeps {
  db: Database;
  /**
   * A project's verified domains or active keys changed: caches of its policy and its signing keys
   * on every node drop it (packages/auth's invalidation channel, published here).
   */
  redis: Redis;
  config: {
    encryptionKey: Buffer;
    redisKeyPrefix: string;
    dnsServers: string[] | undefined;
    /** SMTP_HOSTNAME, named in the SPF suggestion (and as the bounce domain's MX host). */
    smtp: { hostname: string };
    /** BOUNCE_DOMAIN: with it, the records include the return-path records. */
    bounces?: { domain: string | undefined };
  };
  /** This process's own caches, dropped before the change is answered. */
  localCaches?: { invalidate(event: AuthInvalidation): void }[];
  /** TXT look-ups; node:dns at DNS_SERVERS when not given. */
  lookupTxt?: TxtLookup;
  /** MX look-ups (the return-path record); node:dns at DNS_SERVERS when not given. */
  lookupMx?: MxLookup;
}

/** Who asks, for the audit trail. */
export interface Actor {
  actor: string;
  ip?: string | null;
}

/** A new key: generated (RSA-2048 unless `algorithm` is "ed25519") or the private key given as PEM. */
export interface KeyInput {
  algorithm?: DkimAlgorithm;
  privateKey?: string;
}

export interface DomainKeyView {
  selector: string;
  algorithm: DkimAlgorithm;
  /** `active`: signs (the newest active key does); `pending`: waits for a verify to find its record. */
  status: "active" | "pending";
  createdAt: Date;
  activatedAt: Date | null;
}

export interface DomainView {
  id: string;
  domain: string;
  verified: boolean;
  verifiedAt: Date | null;
  createdAt: Date;
  keys: DomainKeyView[];
  records: DnsRecord[];
}

export interface VerifyResult {
  domain: DomainView;
  records: CheckedRecord[];
  /** Selectors whose key became active with this verify. */
  activated: string[];
}

type KeyRefusal = { message: string };
export type CreateDomainResult = Result<DomainView, "invalid_key" | "domain_exists", KeyRefusal>;
export type RotateResult = Result<DomainView, "invalid_key" | "rotation_pending" | "not_found", KeyRefusal>;

type DomainWithKeys = Domain & { keys: DkimKey[] };

const byCreation = (a: DkimKey, b: DkimKey) => a.createdAt.getTime() - b.createdAt.getTime();

function keyPairOf(input: KeyInput): DkimKeyPair | { reason: "invalid_key"; message: string } {
  if (input.privateKey === undefined) return generateDkimKey(input.algorithm ?? "rsa");
  const imported = importDkimKey(input.privateKey);
  if ("reason" in imported) return imported;
  if (input.algorithm && input.algorithm !== imported.algorithm)
    return {
      reason: "invalid_key",
      message: `privateKey: an ${imported.algorithm} key, but algorithm says ${input.algorithm}`,
    };
  return imported;
}

export function createDomainService(deps: DomainServiceDeps) {
  const { db } = deps;
  const { encryptionKey } = deps.config;
  const lookup = {
    txt: deps.lookupTxt ?? createTxtLookup(deps.config.dnsServers),
    mx: deps.lookupMx ?? createMxLookup(deps.config.dnsServers),
  };
  const changed = (projectId: string) => {
    const event = { kind: "project", projectId } as const;
    for (const cache of deps.localCaches ?? []) cache.invalidate(event);
    return publishAuthInvalidation(deps.redis, deps.config.redisKeyPrefix, event);
  };

  const view = (domain: DomainWithKeys): DomainView => {
    const keys = [...domain.keys].sort(byCreation);
    return {
      id: domain.id,
      domain: domain.domain,
      verified: domain.verifiedAt !== null,
      verifiedAt: domain.verifiedAt,
      createdAt: domain.createdAt,
      keys: keys.map((key) => ({
        selector: key.selector,
        algorithm: key.algorithm as DkimAlgorithm,
        status: key.activatedAt ? "active" : "pending",
        createdAt: key.createdAt,
        activatedAt: key.activatedAt,
      })),
      records: recordsOf(
        domain.domain,
        keys.map((key) => ({
          selector: key.selector,
          algorithm: key.algorithm as DkimAlgorithm,
          publicKey: key.publicKey,
        })),
        deps.config.smtp.hostname,
        deps.config.bounces?.domain,
      ),
    };
  };

  const find = (projectId: string, id: string) =>
    db.domain.findFirst({ where: { id, projectId }, include: { keys: true } });

  const sealedKey = (pair: DkimKeyPair, selector: string) => ({
    selector,
    algorithm: pair.algorithm,
    publicKey: pair.publicKey,
    privateKeySealed: sealSecret(pair.privateKeyPem, encryptionKey),
  });

  return {
    async create(
      projectId: string,
      input: { domain: string } & KeyInput,
      by: Actor,
    ): Promise<CreateDomainResult> {
      const pair = keyPairOf(input);
      if ("reason" in pair) return refuse("invalid_key", { message: pair.message });
      const selector = dkimSelectors[0];
      try {
        const created = await db.$transaction(async (tx) => {
          const domain = await tx.domain.create({
            data: { projectId, domain: input.domain, keys: { create: sealedKey(pair, selector) } },
            include: { keys: true },
          });
          await recordAudit(tx, {
            actor: by.actor,
            ip: by.ip,
            projectId,
            action: "domain.created",
            details: {
              domainId: domain.id,
              domain: domain.domain,
              selector,
              algorithm: pair.algorithm,
              imported: input.privateKey !== undefined,
            },
          });
          return domain;
        });
        return ok(view(created));
      } catch (error) {
        if ((error as { code?: string }).code === "P2002")
          return refuse("domain_exists", {
            message: `domain: ${input.domain} is already a domain of this project`,
          });
        throw error;
      }
    },

    async list(projectId: string): Promise<DomainView[]> {
      const domains = await db.domain.findMany({
        where: { projectId },
        include: { keys: true },
        orderBy: { domain: "asc" },
      });
      return domains.map(view);
    },

    async get(projectId: string, id: string): Promise<DomainView | undefined> {
      const domain = await find(projectId, id);
      return domain ? view(domain) : undefined;
    },

    async remove(projectId: string, id: string, by: Actor): Promise<boolean> {
      const removed = await db.$transaction(async (tx) => {
        const domain = await tx.domain.findFirst({ where: { id, projectId } });
        if (!domain) return false;
        await tx.domain.delete({ where: { id } });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "domain.deleted",
          details: { domainId: id, domain: domain.domain },
        });
        return true;
      });
      if (removed) await changed(projectId);
      return removed;
    },

    /**
     * Looks every record up. A key whose DKIM record is found becomes active (and the domain
     * verified); when a rotation's new key becomes active, the older keys are dropped. Records
     * that are missing or wrong later do not deactivate a key: a verify reports, an operator
     * removes.
     */
    async verify(projectId: string, id: string, by: Actor): Promise<VerifyResult | undefined> {
      const domain = await find(projectId, id);
      if (!domain) return undefined;
      const records = await Promise.all(view(domain).records.map((record) => checkRecord(record, lookup)));
      const found = new Set(
        records.filter((r) => r.purpose === "dkim" && r.state === "ok").map((r) => r.selector),
      );
      const newlyActive = domain.keys.filter((key) => !key.activatedAt && found.has(key.selector));
      const now = new Date();
      const updated = await db.$transaction(async (tx) => {
        if (newlyActive.length > 0) {
          const newest = [...newlyActive].sort(byCreation).at(-1) as DkimKey;
          await tx.dkimKey.updateMany({
            where: { id: { in: newlyActive.map((key) => key.id) } },
            data: { activatedAt: now },
          });
          // The rotation is complete: keys older than the newest active one no longer sign.
          await tx.dkimKey.deleteMany({ where: { domainId: id, createdAt: { lt: newest.createdAt } } });
          if (!domain.verifiedAt) await tx.domain.update({ where: { id }, data: { verifiedAt: now } });
        }
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "domain.verified",
          details: {
            domainId: id,
            domain: domain.domain,
            records: records.map((r) => ({ purpose: r.purpose, name: r.name, state: r.state })),
            activated: newlyActive.map((key) => key.selector),
          },
        });
        return tx.domain.findUniqueOrThrow({ where: { id }, include: { keys: true } });
      });
      if (newlyActive.length > 0) await changed(projectId);
      return { domain: view(updated), records, activated: newlyActive.map((key) => key.selector) };
    },

    /** A new key under the free selector; it signs once a verify finds its record. */
    async rotate(projectId: string, id: string, input: KeyInput, by: Actor): Promise<RotateResult> {
      const domain = await find(projectId, id);
      if (!domain) return refuse("not_found", { message: `no domain ${id}` });
      const pending = domain.keys.find((key) => !key.activatedAt);
      if (pending)
        return refuse("rotation_pending", {
          message: `key ${pending.selector} is not active yet: publish its record and verify, or remove the domain`,
        });
      const used = new Set(domain.keys.map((key) => key.selector));
      const selector = dkimSelectors.find((s) => !used.has(s)) as string;
      const pair = keyPairOf(input);
      if ("reason" in pair) return refuse("invalid_key", { message: pair.message });
      const rotated = await db.$transaction(async (tx) => {
        await tx.dkimKey.create({ data: { domainId: id, ...sealedKey(pair, selector) } });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "domain.rotated",
          details: { domainId: id, domain: domain.domain, selector, algorithm: pair.algorithm },
        });
        return tx.domain.findUniqueOrThrow({ where: { id }, include: { keys: true } });
      });
      return ok(view(rotated));
    },
  };
}

export type DomainService = ReturnType<typeof createDomainService>;

/**
 * The signing keys of a project by domain (one per domain: the newest active key), each private
 * key opened and read once here rather than at every signature.
 */
export async function loadSigningKeys(
  db: Database,
  encryptionKey: Buffer,
  projectId: string,
): Promise<Map<string, SigningKey>> {
  const keys = await db.dkimKey.findMany({
    where: { activatedAt: { not: null }, domain: { projectId } },
    include: { domain: { select: { domain: true } } },
    orderBy: { activatedAt: "asc" },
  });
  const byDomain = new Map<string, SigningKey>();
  for (const key of keys)
    byDomain.set(key.domain.domain, {
      domain: key.domain.domain,
      selector: key.selector,
      algorithm: key.algorithm as DkimAlgorithm,
      privateKey: createPrivateKey(openSecret(key.privateKeySealed, encryptionKey)),
    });
  return byDomain;
}
