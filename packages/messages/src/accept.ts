import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type SqlPool, uuidv7 } from "@postern/db";
import type { PoolClient } from "pg";
import { from as copyFrom } from "pg-copy-streams";

/** A message as the accept statement stores it (apps/smtp builds it from the SMTP session). */
export interface AcceptedMessage {
  id: string;
  projectId: string;
  credentialId: string | null;
  /** The audit event's actor, `smtp:<key>`. */
  actor: string;
  ip: string;
  mailFrom: string;
  recipients: string[];
  /** The bytes as they will be delivered. */
  bytes: Buffer;
  headerMessageId: string | null;
  subject: string | null;
  /**
   * `queued` for delivery; `held` until approved or denied (a rule's hold); `sandboxed`, never
   * delivered (a sandbox project).
   */
  status: AcceptedStatus;
  /** The delivery job planned for a queued message (see @postern/queue `planDeliveryJobs`); null for the others. */
  deliveryJobId: string | null;
  /**
   * Set when the project suppresses duplicates: the message's fingerprint (hex SHA-256,
   * duplicates.ts) and the project's window. Two messages of one call never share a fingerprint.
   */
  duplicates?: { fingerprint: string; windowSeconds: number };
  /**
   * Recipients of the submission left out of `recipients` because the project suppresses them
   * (HTTP submission; SMTP refuses them at RCPT): the statement writes a `message.suppressed`
   * event naming them, after the message's first event.
   */
  suppressed?: SuppressedRecipient[];
}

/** A recipient not sent to: the suppression (`address` or `*@domain`) that matched it and why. */
export interface SuppressedRecipient {
  address: string;
  suppression: string;
  reason: string;
}

/** The statuses a message is created with (transitions.ts). */
export type AcceptedStatus = "queued" | "held" | "sandboxed";

/** What the statement did with a message: stored it, or found it a resubmission of `firstId`. */
export type StoreResult = { stored: true } | { stored: false; firstId: string };

/**
 * Commits messages with ONE statement (one round trip, one commit, one WAL flush for the batch):
 * each message's row, body, recipients, `message.accepted` audit event and its event
 * (`message.accepted`, or `message.held` for a held message: the status it is created with is its
 * first change; the audit event and event of a message not created `queued` carry its `status`),
 * and its fingerprint when it has one. A message whose fingerprint is taken by an earlier
 * message whose window has not ended is not stored: its audit event is `message.duplicate`
 * naming the first message, and its result names it. Throws what PostgreSQL answered when
 * nothing was committed.
 */
export async function storeAcceptedMessages(
  sql: Pick<SqlPool, "query">,
  messages: AcceptedMessage[],
): Promise<StoreResult[]> {
  const { rows } = await sql.query<{ id: string; firstId: string }>({
    // Named, so each connection parses and plans the statement for a batch size once.
    name: `postern-accept-${messages.length}`,
    text: acceptStatement(messages.length),
    values: [...acceptParameters(messages), ...messages.map((m) => m.bytes)],
  });
  const firstIds = new Map(rows.map((row) => [row.id, row.firstId]));
  return messages.map((m) => {
    const firstId = firstIds.get(m.id);
    return firstId === undefined ? { stored: true } : { stored: false, firstId };
  });
}

/**
 * Commits one message as `storeAcceptedMessages` does, its body streamed into "MessageBody" with
 * `COPY ... FROM STDIN` in the same transaction, a slice at a time (`copySliceBytes`). node-postgres
 * sends a statement's parameters in one message it builds whole, so a body passed as a parameter
 * is copied once more, whole, for as long as it is being sent: for a 25 MB message, 25 MB more
 * (docs/benchmarks-history.md, Seventeenth round). COPY's binary format carries the bytes as they
 * are (no hex or base64 text on the way), and PostgreSQL writes them once. Needs a connection of
 * its own for the transaction. A duplicate (see `storeAcceptedMessages`) stores no body.
 */
export async function storeLargeMessage(
  sql: Pick<SqlPool, "connect">,
  message: AcceptedMessage,
): Promise<StoreResult> {
  const at = new Date();
  const client = await sql.connect();
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    const { rows } = await client.query<{ id: string; firstId: string }>({
      name: "postern-accept-1-apart",
      text: acceptStatement(1, "apart"),
      values: acceptParameters([message], at),
    });
    const firstId = rows[0]?.firstId;
    if (firstId === undefined) await copyBody(client, message.id, message.bytes, at);
    await client.query("COMMIT");
    return firstId === undefined ? { stored: true } : { stored: false, firstId };
  } catch (error) {
    // Rolled back by PostgreSQL when the connection is gone; a connection that cannot roll back is dropped.
    await client.query("ROLLBACK").catch((rollback: Error) => {
      broken = rollback;
    });
    throw error;
  } finally {
    client.release(broken);
  }
}

/** Bytes of a body handed to the connection at a time by `storeLargeMessage`. */
const copySliceBytes = 256 * 1024;

/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01), for a binary timestamp. */
const postgresEpochMicros = 946_684_800_000_000n;

/**
 * One "MessageBody" row in COPY's binary format (PostgreSQL's COPY reference, Binary Format):
 * the signature and header, one tuple of three fields (uuid: 16 bytes; bytea: the bytes as they
 * are; timestamp: microseconds since 2000-01-01, the column holding UTC), and the trailer.
 */
async function copyBody(client: PoolClient, messageId: string, body: Buffer, at: Date): Promise<void> {
  const head = Buffer.alloc(19 + 2 + 4 + 16 + 4);
  let offset = head.write("PGCOPY\n\xff\r\n\0", 0, "latin1");
  offset = head.writeInt32BE(0, offset); // flags
  offset = head.writeInt32BE(0, offset); // header extension
  offset = head.writeInt16BE(3, offset);
  offset = head.writeInt32BE(16, offset);
  offset += head.write(messageId.replaceAll("-", ""), offset, "hex");
  head.writeInt32BE(body.length, offset);
  const tail = Buffer.alloc(4 + 8 + 2);
  tail.writeInt32BE(8, 0);
  tail.writeBigInt64BE(BigInt(at.getTime()) * 1000n - postgresEpochMicros, 4);
  tail.writeInt16BE(-1, 12);
  const stream = client.query(
    copyFrom(`COPY "MessageBody" ("messageId", "data", "createdAt") FROM STDIN (FORMAT binary)`),
  );
  const slices = (function* () {
    yield head;
    for (let from = 0; from < body.length; from += copySliceBytes)
      yield body.subarray(from, from + copySliceBytes);
    yield tail;
  })();
  await pipeline(Readable.from(slices, { objectMode: false }), stream);
}

const statements = new Map<string, string>();

/**
 * One statement for n messages: data-modifying CTEs run exactly once and a statement is its own
 * transaction. Rows come from arrays (`unnest`), so the text depends only on n (bodies are one
 * binary parameter each, never hex in an array literal). Column values are those Prisma wrote:
 * ids generated here (UUIDv7), createdAt and updatedAt the same instant in UTC, every other
 * column its default. The statement-level stats trigger on "Message" sees the batch as one
 * insert. Foreign keys are checked at the end of the statement, when every row exists.
 * The event's data is the audit event's details without the message id (its own column), read
 * from the same parameter: the event costs rows, not bytes on the wire. A message with suppressed
 * recipients gets its `message.suppressed` event from the same INSERT, ordered after its first.
 *
 * Duplicates: `f` claims each fingerprint for its message, or takes over a row whose window has
 * ended; on a live row it changes nothing but returns the row (an ON CONFLICT update sees and
 * locks the latest committed version, where a plain read would see only the statement's
 * snapshot): a returned id other than the message's own makes it a duplicate (`d`), and every
 * other part leaves it out. Two statements claiming one fingerprint at once: the second waits for
 * the first's commit and then answers its id. Rows are claimed in fingerprint order, so two
 * batches never wait on each other's rows in opposite orders.
 *
 * `apart`: the same statement without "MessageBody" and its parameters, for `storeLargeMessage`,
 * which streams the body after it in the same transaction.
 */
export function acceptStatement(count: number, bodies: "inline" | "apart" = "inline"): string {
  const key = `${count}-${bodies}`;
  let text = statements.get(key);
  if (text) return text;
  const at = `($1::timestamptz AT TIME ZONE 'UTC')`;
  const bodyParameters = Array.from({ length: count }, (_, i) => `$${21 + i}::bytea`).join(", ");
  const kept = (id: string) => `${id} NOT IN (SELECT d.id FROM d)`;
  text = `WITH f AS (
  INSERT INTO "MessageFingerprint" AS f ("projectId", "fingerprint", "messageId", "createdAt", "expiresAt")
  SELECT t.project_id, t.fingerprint, t.id, ${at}, ${at} + make_interval(secs => t.window_seconds)
  FROM unnest($2::uuid[], $3::uuid[], $17::text[], $18::int[]) AS t(id, project_id, fingerprint, window_seconds)
  WHERE t.fingerprint IS NOT NULL
  ORDER BY t.project_id, t.fingerprint
  ON CONFLICT ("projectId", "fingerprint") DO UPDATE SET
    "messageId" = CASE WHEN f."expiresAt" <= ${at} THEN EXCLUDED."messageId" ELSE f."messageId" END,
    "createdAt" = CASE WHEN f."expiresAt" <= ${at} THEN EXCLUDED."createdAt" ELSE f."createdAt" END,
    "expiresAt" = CASE WHEN f."expiresAt" <= ${at} THEN EXCLUDED."expiresAt" ELSE f."expiresAt" END
  RETURNING f."projectId", f."fingerprint", f."messageId"
), d AS (
  SELECT t.id, f."messageId" AS first_id
  FROM unnest($2::uuid[], $3::uuid[], $17::text[]) AS t(id, project_id, fingerprint)
  JOIN f ON f."projectId" = t.project_id AND f."fingerprint" = t.fingerprint
  WHERE f."messageId" <> t.id
), m AS (
  INSERT INTO "Message" ("id", "projectId", "credentialId", "mailFrom", "headerMessageId", "subject", "size", "sha256", "deliveryJobId", "status", "createdAt", "updatedAt")
  SELECT t.*, ${at}, ${at}
  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $16::uuid[], $19::"MessageStatus"[]) AS t(id)
  WHERE ${kept("t.id")}
), ${
    bodies === "inline"
      ? `b AS (
  INSERT INTO "MessageBody" ("messageId", "data", "createdAt")
  SELECT t.*, ${at} FROM unnest($2::uuid[], ARRAY[${bodyParameters}]) AS t(id) WHERE ${kept("t.id")}
), `
      : ""
  }r AS (
  INSERT INTO "MessageRecipient" ("id", "messageId", "address", "updatedAt")
  SELECT t.*, ${at} FROM unnest($10::uuid[], $11::uuid[], $12::text[]) AS t(id, message_id)
  WHERE ${kept("t.message_id")}
), a AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, t.project_id, t.actor,
    CASE WHEN d.id IS NULL THEN 'message.accepted' ELSE 'message.duplicate' END, t.ip,
    CASE WHEN d.id IS NULL THEN t.details ELSE jsonb_set(t.details, '{messageId}', to_jsonb(d.first_id::text)) END
  FROM unnest($2::uuid[], $3::uuid[], $13::text[], $14::text[], $15::jsonb[]) WITH ORDINALITY AS t(id, project_id, actor, ip, details, n)
  LEFT JOIN d ON d.id = t.id
  ORDER BY t.n
), e AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT t.project_id, t.message_id, v.type, ${at}, v.data
  FROM unnest($3::uuid[], $2::uuid[], $15::jsonb[], $19::text[], $20::jsonb[])
       WITH ORDINALITY AS t(project_id, message_id, details, status, suppressed, n)
  CROSS JOIN LATERAL (
    VALUES (0, CASE t.status WHEN 'held' THEN 'message.held' ELSE 'message.accepted' END, t.details - 'messageId'),
           (1, 'message.suppressed', t.suppressed)
  ) AS v(k, type, data)
  WHERE ${kept("t.message_id")} AND v.data IS NOT NULL
  ORDER BY t.n, v.k
)
SELECT d.id, d.first_id AS "firstId" FROM d`;
  statements.set(key, text);
  return text;
}

/** `acceptStatement`'s parameters; `at`, the instant every row is stamped with, is $1. */
function acceptParameters(messages: AcceptedMessage[], at = new Date()): unknown[] {
  const recipientIds: string[] = [];
  const recipientMessageIds: string[] = [];
  const recipientAddresses: string[] = [];
  for (const message of messages) {
    for (const address of message.recipients) {
      recipientIds.push(uuidv7());
      recipientMessageIds.push(message.id);
      recipientAddresses.push(address);
    }
  }
  return [
    at.toISOString(),
    messages.map((m) => m.id),
    messages.map((m) => m.projectId),
    messages.map((m) => m.credentialId),
    messages.map((m) => m.mailFrom),
    messages.map((m) => m.headerMessageId),
    messages.map((m) => m.subject),
    messages.map((m) => m.bytes.length),
    messages.map((m) => createHash("sha256").update(m.bytes).digest("hex")),
    recipientIds,
    recipientMessageIds,
    recipientAddresses,
    messages.map((m) => m.actor),
    messages.map((m) => m.ip),
    messages.map((m) =>
      JSON.stringify({
        messageId: m.id,
        mailFrom: m.mailFrom,
        recipients: m.recipients,
        size: m.bytes.length,
        headerMessageId: m.headerMessageId,
        ...(m.status === "queued" ? {} : { status: m.status }),
      }),
    ),
    messages.map((m) => m.deliveryJobId),
    messages.map((m) => m.duplicates?.fingerprint ?? null),
    messages.map((m) => m.duplicates?.windowSeconds ?? 0),
    messages.map((m) => m.status),
    messages.map((m) => (m.suppressed?.length ? JSON.stringify(suppressedEventData(m.suppressed)) : null)),
  ];
}

/**
 * `message.suppressed`'s data: each recipient as the other events name recipients (CONTRACT §9),
 * with the refusal SMTP would have answered at RCPT, and the suppression that matched.
 */
function suppressedEventData(suppressed: SuppressedRecipient[]) {
  return {
    recipients: suppressed.map((s) => ({
      address: s.address,
      status: "suppressed",
      code: 550,
      enhancedCode: "5.7.1",
      response: `Recipient suppressed by the project (${s.reason})`,
      suppression: s.suppression,
      reason: s.reason,
    })),
  };
}
