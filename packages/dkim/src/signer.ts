import type { AuthInvalidation } from "@postern/auth/invalidation";
import type { Database } from "@postern/db";
import { loadSigningKeys } from "./domains";
import { dkimSignatureOf, type SigningKey } from "./signature";

export interface DkimSignerOptions {
  db: Database;
  encryptionKey: Buffer;
  /** How long a project's keys are remembered; changes made through Postern drop them at once. */
  cacheTtlMs: number;
  /**
   * The message's From fields and their addresses, read as the SMTP front door reads them for its
   * sender policy (apps/smtp's `summariseHeaders`; packages do not import apps).
   */
  readFrom(raw: Buffer): { fromFields: number; from: string[] };
}

/**
 * A message's DKIM-Signature field, made while the message goes: `field` settles during the
 * SMTP exchange that precedes DATA. It rejects when the key cannot sign (a fault, not a choice:
 * sent unsigned, a message of a domain with a strict DMARC policy would be refused or junked).
 */
export interface PendingSignature {
  field: Promise<Buffer>;
}

/** Signs at delivery time; also a listener of packages/auth's invalidations. */
export interface DkimSigner {
  /**
   * The signature of a message whose From domain (or the nearest parent domain) has an active key
   * of the project, begun; undefined when it is sent unsigned. The project's keys are read before
   * it answers, so a key store that cannot be read fails the delivery before anything is sent.
   */
  begin(projectId: string, raw: Buffer): Promise<PendingSignature | undefined>;
  invalidate(event: AuthInvalidation): void;
  forgetAll(): void;
}

export function createDkimSigner(options: DkimSignerOptions): DkimSigner {
  const cache = new Map<string, { until: number; keys: Promise<Map<string, SigningKey>> }>();

  const keysOf = (projectId: string) => {
    const cached = cache.get(projectId);
    if (cached && cached.until > Date.now()) return cached.keys;
    const keys = loadSigningKeys(options.db, options.encryptionKey, projectId);
    cache.set(projectId, { until: Date.now() + options.cacheTtlMs, keys });
    keys.catch(() => cache.delete(projectId));
    return keys;
  };

  return {
    async begin(projectId, raw) {
      const keys = await keysOf(projectId);
      if (keys.size === 0) return undefined;
      const key = keyFor(keys, options.readFrom(raw));
      if (!key) return undefined;
      const field = dkimSignatureOf(raw, key).then(
        (signature) => Buffer.from(signature),
        (error: Error) => {
          throw new Error(`DKIM signing for ${key.domain} failed: ${error.message}`, { cause: error });
        },
      );
      // Awaited by the message's stream at DATA; a transaction refused before DATA never reads it.
      field.catch(() => {});
      return { field };
    },
    invalidate(event) {
      if (event.kind === "project") cache.delete(event.projectId);
    },
    forgetAll() {
      cache.clear();
    },
  };
}

/** The key of the From header's domain or of its nearest parent (relaxed DMARC alignment). */
function keyFor(
  keys: Map<string, SigningKey>,
  headers: { fromFields: number; from: string[] },
): SigningKey | undefined {
  // RFC 5322 allows one From field with one address for a signed message's author domain; with
  // more, which author a receiver aligns with is its choice: such messages go unsigned.
  if (headers.fromFields !== 1 || headers.from.length !== 1) return undefined;
  const address = headers.from[0] as string;
  const labels = address
    .slice(address.lastIndexOf("@") + 1)
    .toLowerCase()
    .split(".");
  for (let i = 0; i < labels.length - 1; i++) {
    const key = keys.get(labels.slice(i).join("."));
    if (key) return key;
  }
  return undefined;
}
