import { createHash, type Hash } from "node:crypto";
import { pruneInBatches, type SqlPool } from "@postern/db";

/*
 * Duplicate suppression (docs/rules.md, "Duplicates"): a project with a `dedupWindowSeconds`
 * answers a resubmission of a message it accepted within that window with the first message's id
 * and stores nothing. The fingerprint row is written by the accept statement itself (accept.ts),
 * so the table's primary key decides between identical submissions committing at the same moment.
 */

/** What follows the envelope in a fingerprint: the message bytes, or (HTTP JSON) the request. */
export type FingerprintedContent = "message" | "json";

/**
 * A fingerprint's SHA-256, fed with the envelope; the caller adds the content as it arrives (no
 * copy of the message). The envelope is written as an SMTP transaction states it, addresses in
 * lower case (as Postern compares repeated recipients), recipients sorted and each once:
 *
 *     MAIL FROM:<app@example.com>\r\n
 *     RCPT TO:<a@example.org>\r\n
 *     RCPT TO:<b@example.org>\r\n
 *     DATA\r\n            (or JSON\r\n before the canonical JSON of an HTTP JSON submission)
 *     <content>
 *
 * so a client that resends the same transaction in another recipient order, or with another
 * case, is recognised, and no envelope can be read as another's (`<`, `>` and CR LF cannot occur
 * in an accepted address).
 */
export function startFingerprint(
  envelope: { mailFrom: string; recipients: readonly string[] },
  content: FingerprintedContent,
): Hash {
  const recipients = [...new Set(envelope.recipients.map((r) => r.toLowerCase()))].sort();
  const hash = createHash("sha256");
  hash.update(`MAIL FROM:<${envelope.mailFrom.toLowerCase()}>\r\n`);
  for (const recipient of recipients) hash.update(`RCPT TO:<${recipient}>\r\n`);
  hash.update(content === "message" ? "DATA\r\n" : "JSON\r\n");
  return hash;
}

const pruneStatement = {
  name: "postern-fingerprint-prune",
  text: `
DELETE FROM "MessageFingerprint"
WHERE ("projectId", "fingerprint") IN (
  SELECT "projectId", "fingerprint" FROM "MessageFingerprint" WHERE "expiresAt" <= $1::timestamp(3) LIMIT $2::int)`,
};

/**
 * Deletes fingerprints expired at `now`, in statements of at most `batchSize` rows (by the
 * `expiresAt` index: packages/db's `pruneInBatches`, as for audit and message events); returns how
 * many. An expired row left behind changes nothing: the next message with its fingerprint takes
 * it over (accept.ts).
 */
export function pruneFingerprints(
  sql: Pick<SqlPool, "query">,
  now: Date,
  batchSize?: number,
): Promise<number> {
  return pruneInBatches(sql, pruneStatement, now, batchSize);
}
