import { createHash } from "node:crypto";
import type { AuthenticatedClient } from "@postern/auth";
import { type SqlPool, uuidv7 } from "@postern/db";
import { type DeliveryProducer, type PlannedDeliveryJob, planDeliveryJobs } from "@postern/queue";
import type { Logger } from "@postern/telemetry";
import type { HeaderSummary } from "./message";

/**
 * Who hands a message over: an SMTP session's credential, or (HTTP submission) no credential and
 * the audit actor (`token:<id>`, `admin`).
 */
export type Submitter = AuthenticatedClient | { project: { id: string }; actor: string };

export interface MessageToAccept {
  id: string;
  client: Submitter;
  ip: string;
  mailFrom: string;
  recipients: string[];
  /** The bytes as they will be delivered (trace header included). */
  bytes: Buffer;
  headers: HeaderSummary;
}

/**
 * `content_unstorable`: PostgreSQL refused the message's own data (it was written alone), so it
 * would be refused again; `store_unavailable`: anything else, worth a retry.
 */
export type AcceptOutcome =
  | { ok: true }
  | { ok: false; reason: "store_unavailable" | "content_unstorable"; error: Error };

export interface AcceptorOptions {
  /** Most messages written by one statement. */
  maxBatchMessages?: number;
  /** Most message bytes in one statement (a larger message is written alone). */
  maxBatchBytes?: number;
  /** Batches being written at once; the next batch fills while they are. */
  maxBatchesInFlight?: number;
  /** Longest a batch waits for messages still being received (see `expect`). */
  maxHoldMs?: number;
}

export interface Acceptor {
  /**
   * Announces a message on its way (its DATA has begun), so that a batch about to be written
   * with nothing else in flight waits a little for it.
   */
  expect(): ExpectedMessage;
  /** `expect()` and `accept` at once. */
  accept(message: MessageToAccept): Promise<AcceptOutcome>;
  /** Resolves when the delivery jobs of every message committed so far have been added (or failed to be). */
  settled(): Promise<void>;
}

export interface ExpectedMessage {
  /** Resolves once the message is committed: then 250 may be sent. */
  accept(message: MessageToAccept): Promise<AcceptOutcome>;
  /** The message will not come (refused, or the client left); after `accept`, does nothing. */
  cancel(): void;
}

interface Waiting {
  message: MessageToAccept;
  resolve: (outcome: AcceptOutcome) => void;
}

/**
 * The durability point, with group commit. Concurrent accepts are written together: while a
 * batch is being written the next one fills, and a batch is ONE SQL statement (Message, body,
 * one row per recipient and the `message.accepted` audit event of every message in it), so one
 * round trip and one commit (one WAL fsync) serve the whole batch. Nobody waits for a batch to
 * fill; only a batch that would go with nothing in flight waits a little for the messages other
 * sessions are receiving (below).
 * Every message of a batch is answered after that commit; a failed batch answers each of its
 * messages 451 (the caller refunds the quota). A committed batch then gets one delivery job per
 * project (planned before the commit, each message row naming its job), added with one pipeline
 * after the batch has been answered: the commit is the durability point, and the job only says
 * "deliver these now". Waiting for Redis
 * too doubled the time a client waited for its 250 under load (17 ms for the commit, 18 ms for
 * the enqueue, per batch, in the benchmark). If adding the jobs fails, or the process dies
 * before, the delivery sweeper enqueues the queued messages that have no job.
 *
 * When nothing is being written, the batch would go at once, however small. Under load that is
 * when messages come one at a time (a new connection for each, as many applications send), and
 * each then pays a statement, a commit, a job and a worker wake-up alone: PostgreSQL's cost per
 * message halves from one to four messages a statement (docs/benchmarks.md, eleventh round). So
 * such a batch waits, as PostgreSQL's `commit_delay` does, for the messages other sessions are
 * receiving at that moment (`expect`), and for at most `maxHoldMs`: a lone client is never held,
 * and a slow upload holds the others no longer than that.
 */
export function createAcceptor(
  deps: {
    sql: Pick<SqlPool, "query">;
    producer: DeliveryProducer;
    log: Logger;
    /** Counts messages stored but not enqueued (metric). */
    onEnqueueFailed?: (count: number) => void;
  },
  options: AcceptorOptions = {},
): Acceptor {
  const maxMessages = options.maxBatchMessages ?? 64;
  // Large messages gain little from sharing a commit, and node-postgres builds each statement in
  // a buffer of its own (a 16 MiB batch held about 48 MB while it was written).
  const maxBytes = options.maxBatchBytes ?? 4 * 1024 * 1024;
  const maxInFlight = options.maxBatchesInFlight ?? 2;
  const maxHoldMs = options.maxHoldMs ?? 10;
  const waiting: Waiting[] = [];
  let waitingBytes = 0;
  let inFlight = 0;
  /** Messages announced by `expect` and not yet handed over. */
  let expected = 0;
  let holdTimer: NodeJS.Timeout | undefined;
  let holdExpired = false;

  const takeBatch = (): Waiting[] => {
    const batch: Waiting[] = [];
    let bytes = 0;
    for (const next of waiting) {
      if (batch.length === maxMessages) break;
      if (batch.length > 0 && bytes + next.message.bytes.length > maxBytes) break;
      batch.push(next);
      bytes += next.message.bytes.length;
    }
    waiting.splice(0, batch.length);
    waitingBytes -= bytes;
    return batch;
  };

  /** Nothing in flight, messages on their way, and room for them in the batch. */
  const holding = () =>
    inFlight === 0 &&
    expected > 0 &&
    waiting.length < maxMessages &&
    waitingBytes < maxBytes &&
    !holdExpired &&
    maxHoldMs > 0;

  const writeNext = () => {
    while (inFlight < maxInFlight && waiting.length > 0) {
      if (holding()) {
        holdTimer ??= setTimeout(() => {
          holdTimer = undefined;
          holdExpired = true;
          writeNext();
        }, maxHoldMs);
        return;
      }
      clearTimeout(holdTimer);
      holdTimer = undefined;
      holdExpired = false;
      const batch = takeBatch();
      inFlight++;
      void write(batch);
    }
  };

  const write = async (batch: Waiting[]) => {
    const messages = batch.map((w) => w.message);
    const jobs = planDeliveryJobs(messages.map((m) => ({ id: m.id, projectId: m.client.project.id })));
    const jobIds = new Map(jobs.flatMap((job) => job.messageIds.map((id) => [id, job.id])));
    const failure = await store(messages, jobIds);
    let failures = messages.map(() => failure);
    if (failure && messages.length > 1 && refusedContent(failure)) {
      // One message's content refused (a NUL byte in a subject, say) must not cost the other
      // messages of the batch their 250: each is written alone, naming the job planned for it.
      failures = [];
      for (const message of messages) failures.push(await store([message], jobIds));
    }
    // The connection is free for the next batch.
    inFlight--;
    writeNext();
    const stored = new Set(messages.filter((_, i) => !failures[i]).map((m) => m.id));
    for (const [i, w] of batch.entries()) {
      const error = failures[i];
      if (!error) {
        w.resolve({ ok: true });
        continue;
      }
      // A data exception here came from writing this message alone (a batch refused for its
      // content was written message by message above): this message's own bytes are the cause.
      const reason = dataException(error) ? "content_unstorable" : "store_unavailable";
      w.resolve({ ok: false, reason, error });
    }
    const storedJobs = jobs
      .map((job) => ({ ...job, messageIds: job.messageIds.filter((id) => stored.has(id)) }))
      .filter((job) => job.messageIds.length > 0);
    if (storedJobs.length > 0) track(enqueue(storedJobs));
  };

  const enqueue = async (jobs: PlannedDeliveryJob[]) => {
    try {
      await deps.producer.enqueuePlanned(jobs);
    } catch (error) {
      const messageIds = jobs.flatMap((job) => job.messageIds);
      deps.onEnqueueFailed?.(messageIds.length);
      deps.log.warn(
        { err: error, messageIds },
        "messages stored but not enqueued; the delivery sweeper will enqueue them",
      );
    }
  };

  const enqueuing = new Set<Promise<void>>();
  const track = (work: Promise<void>) => {
    enqueuing.add(work);
    void work.finally(() => enqueuing.delete(work));
  };

  /** Commits the messages; returns the error when they were not committed. */
  const store = async (
    messages: MessageToAccept[],
    jobIds: Map<string, string>,
  ): Promise<Error | undefined> => {
    try {
      await deps.sql.query({
        // Named, so each connection parses and plans the statement for a batch size once.
        name: `postern-accept-${messages.length}`,
        text: insertStatement(messages.length),
        values: insertParameters(messages, jobIds),
      });
      return undefined;
    } catch (error) {
      return error as Error;
    }
  };

  const expect = (): ExpectedMessage => {
    expected++;
    let coming = true;
    const arrive = () => {
      if (!coming) return false;
      coming = false;
      expected--;
      return true;
    };
    return {
      accept(message) {
        arrive();
        return new Promise<AcceptOutcome>((resolve) => {
          waiting.push({ message, resolve });
          waitingBytes += message.bytes.length;
          writeNext();
        });
      },
      cancel() {
        // A batch may have been waiting for this message only.
        if (arrive()) writeNext();
      },
    };
  };

  return {
    expect,
    accept: (message) => expect().accept(message),
    async settled() {
      await Promise.all(enqueuing);
    },
  };
}

const statements = new Map<number, string>();

/**
 * One statement for n messages: data-modifying CTEs run exactly once and a statement is its own
 * transaction. Rows come from arrays (`unnest`), so the text depends only on n (bodies are one
 * binary parameter each, never hex in an array literal). Column values are those Prisma wrote:
 * ids generated here (UUIDv7), createdAt and updatedAt the same instant in UTC, every other
 * column its default. The statement-level stats trigger on "Message" sees the batch as one
 * insert. Foreign keys are checked at the end of the statement, when every row exists.
 */
function insertStatement(count: number): string {
  let text = statements.get(count);
  if (text) return text;
  const at = `($1::timestamptz AT TIME ZONE 'UTC')`;
  const bodies = Array.from({ length: count }, (_, i) => `$${17 + i}::bytea`).join(", ");
  text = `WITH m AS (
  INSERT INTO "Message" ("id", "projectId", "credentialId", "mailFrom", "headerMessageId", "subject", "size", "sha256", "deliveryJobId", "createdAt", "updatedAt")
  SELECT t.*, ${at}, ${at}
  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $16::uuid[]) AS t
), b AS (
  INSERT INTO "MessageBody" ("messageId", "data", "createdAt")
  SELECT t.*, ${at} FROM unnest($2::uuid[], ARRAY[${bodies}]) AS t
), r AS (
  INSERT INTO "MessageRecipient" ("id", "messageId", "address", "updatedAt")
  SELECT t.*, ${at} FROM unnest($10::uuid[], $11::uuid[], $12::text[]) AS t
), a AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, t.project_id, t.actor, 'message.accepted', t.ip, t.details
  FROM unnest($3::uuid[], $13::text[], $14::text[], $15::jsonb[]) WITH ORDINALITY AS t(project_id, actor, ip, details, n)
  ORDER BY t.n
)
SELECT 1`;
  statements.set(count, text);
  return text;
}

function insertParameters(messages: MessageToAccept[], jobIds: Map<string, string>): unknown[] {
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
    new Date().toISOString(),
    messages.map((m) => m.id),
    messages.map((m) => m.client.project.id),
    messages.map((m) => ("credentialId" in m.client ? m.client.credentialId : null)),
    messages.map((m) => m.mailFrom),
    messages.map((m) => m.headers.messageId ?? null),
    messages.map((m) => m.headers.subject ?? null),
    messages.map((m) => m.bytes.length),
    messages.map((m) => createHash("sha256").update(m.bytes).digest("hex")),
    recipientIds,
    recipientMessageIds,
    recipientAddresses,
    messages.map((m) => ("key" in m.client ? `smtp:${m.client.key}` : m.client.actor)),
    messages.map((m) => m.ip),
    messages.map((m) =>
      JSON.stringify({
        messageId: m.id,
        mailFrom: m.mailFrom,
        recipients: m.recipients,
        size: m.bytes.length,
        headerMessageId: m.headers.messageId ?? null,
      }),
    ),
    messages.map((m) => jobIds.get(m.id)),
    ...messages.map((m) => m.bytes),
  ];
}

/** PostgreSQL refused the data itself (SQLSTATE classes 22 and 23), not the connection or the server. */
function refusedContent(error: Error): boolean {
  return dataException(error) || sqlState(error).startsWith("23");
}

/**
 * SQLSTATE class 22, data exception: a value the columns cannot hold (a NUL byte in text, say).
 * Class 23 (integrity constraints) is not counted: a project deleted during the transaction is
 * not the message's fault.
 */
function dataException(error: Error): boolean {
  return sqlState(error).startsWith("22");
}

function sqlState(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : "";
}
