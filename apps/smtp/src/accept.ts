import type { AuthenticatedClient, ProjectPolicy } from "@postern/auth";
import type { SqlPool } from "@postern/db";
import {
  type AcceptedMessage,
  type AcceptedStatus,
  createGroupCommit,
  refusedContent,
  type StoreResult,
  type SuppressedRecipient,
  storeAcceptedMessages,
  storeLargeMessage,
} from "@postern/messages";
import { type DeliveryProducer, type PlannedDeliveryJob, planDeliveryJobs } from "@postern/queue";
import { ok, type Result, refuse } from "@postern/result";
import type { Logger } from "@postern/telemetry";
import type { HeaderSummary } from "./message";

/**
 * Who hands a message over: an SMTP session's credential, or (HTTP submission) no credential and
 * the audit actor (`token:<id>`, `admin`).
 */
export type Submitter = AuthenticatedClient | { project: Pick<ProjectPolicy, "id" | "mode">; actor: string };

export interface MessageToAccept {
  id: string;
  client: Submitter;
  ip: string;
  mailFrom: string;
  recipients: string[];
  /** The bytes as they will be delivered (trace header included). */
  bytes: Buffer;
  headers: HeaderSummary;
  /**
   * When the project suppresses duplicates: the submission's hex SHA-256 (`startFingerprint` of
   * @postern/messages) and the project's `dedupWindowSeconds`.
   */
  duplicates?: { fingerprint: string; windowSeconds: number };
  /**
   * What the message is stored as: `queued` (the default) for delivery, `held` (a rule's hold)
   * until approved or denied. A sandbox project's message is stored `sandboxed` whatever this
   * says (a held one could be approved, and a sandbox never delivers). Only a queued message gets
   * a delivery job.
   */
  initialStatus?: AcceptedStatus;
  /** Recipients of the submission left out of `recipients` because the project suppresses them. */
  suppressed?: SuppressedRecipient[];
}

/**
 * `content_unstorable`: PostgreSQL refused the message's own data (it was written alone), so it
 * would be refused again; `store_unavailable`: anything else, worth a retry.
 */
export type AcceptOutcome = Result<
  /** `duplicateOf`: the message resubmits one accepted within its project's window; nothing was stored. */
  { duplicateOf: string | undefined },
  "store_unavailable" | "content_unstorable",
  { error: Error }
>;

const statusOf = (message: MessageToAccept): AcceptedStatus =>
  message.client.project.mode === "sandbox" ? "sandboxed" : (message.initialStatus ?? "queued");

export interface AcceptorOptions {
  /** Most messages written by one statement. */
  maxBatchMessages?: number;
  /** Most message bytes in one statement (a larger message is written alone). */
  maxBatchBytes?: number;
  /** Batches being written at once; the next batch fills while they are. */
  maxBatchesInFlight?: number;
  /** Longest a batch waits for messages still being received (see `expect`). */
  maxHoldMs?: number;
  /** A message of at least this many bytes is written by a statement of its own (see `createAcceptor`). */
  largeMessageBytes?: number;
  /** Statements writing large messages at once, besides the batches. */
  maxLargeInFlight?: number;
}

/**
 * From this size a message's own bytes cost PostgreSQL more than the commit it would share: a
 * batch of three 1 MiB messages took longer per message than each alone, and building their
 * bytea array copies them once more (docs/benchmarks-history.md, Seventeenth round).
 */
const defaultLargeMessageBytes = 256 * 1024;
/** Four large messages written at once moved more bytes a second than one or eight (same round). */
const defaultMaxLargeInFlight = 4;

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

/**
 * The durability point, with group commit (`createGroupCommit` of @postern/messages, shared with
 * the delivery store). Concurrent accepts are written together: while a batch is being written
 * the next one fills, and a batch is ONE SQL statement (Message, body, one row per recipient, the
 * `message.accepted` audit event and message event of every message in it:
 * `storeAcceptedMessages`), so one round trip and one commit (one WAL fsync) serve the whole
 * batch. Nobody waits for a batch to
 * fill; only a batch that would go with nothing in flight waits a little for the messages other
 * sessions are receiving (below).
 * Every message of a batch is answered after that commit; a failed batch answers each of its
 * messages 451 (the caller refunds the quota), unless PostgreSQL refused one of its rows: then
 * each message is written alone (one refused message must not cost the others their 250). A committed batch then gets one delivery job per
 * project (planned before the commit, each message row naming its job), added with one pipeline
 * after the batch has been answered: the commit is the durability point, and the job only says
 * "deliver these now". Waiting for Redis
 * too about doubled the time a client waited for its 250 under load (docs/benchmarks-history.md,
 * "The 250 before the enqueue"). If adding the jobs fails, or the process dies
 * before, the delivery sweeper enqueues the queued messages that have no job.
 *
 * When nothing is being written, the batch would go at once, however small. Under load that is
 * when messages come one at a time (a new connection for each, as many applications send), and
 * each then pays a statement, a commit, a job and a worker wake-up alone: PostgreSQL's cost per
 * message halves from one to four messages a statement (docs/benchmarks-history.md, Eleventh
 * round). So such a batch waits, as PostgreSQL's `commit_delay` does, for the messages other
 * sessions are receiving at that moment (`expect`), and for at most `maxHoldMs`: a lone client is
 * never held, and a slow upload holds the others no longer than that.
 *
 * A large message (`largeMessageBytes`, 256 KiB by default) is written by a statement of its own,
 * up to `maxLargeInFlight` of them at once beside the batches: the time PostgreSQL takes to write
 * its bytes is then spent by no other message, and a 25 MB upload never takes one of the two
 * batch slots that the small messages behind it wait for.
 */
export function createAcceptor(
  deps: {
    /** With `connect`, a large message's body is streamed (`storeLargeMessage`); without, it is a parameter. */
    sql: Pick<SqlPool, "query"> & Partial<Pick<SqlPool, "connect">>;
    producer: DeliveryProducer;
    log: Logger;
    /** Counts messages stored but not enqueued (metric). */
    onEnqueueFailed?: (count: number) => void;
  },
  options: AcceptorOptions = {},
): Acceptor {
  /** Jobs of committed batches whose callers are being answered: enqueued right after. */
  let committedJobs: PlannedDeliveryJob[] = [];

  const store = async (
    messages: MessageToAccept[],
    write: (accepted: AcceptedMessage[]) => Promise<StoreResult[]> = (accepted) =>
      storeAcceptedMessages(deps.sql, accepted),
  ): Promise<StoreResult[]> => {
    const jobs = planDeliveryJobs(
      messages
        .filter((m) => statusOf(m) === "queued")
        .map((m) => ({ id: m.id, projectId: m.client.project.id })),
    );
    const jobIds = new Map(jobs.flatMap((job) => job.messageIds.map((id) => [id, job.id])));
    const results = await write(
      messages.map((m) => ({
        id: m.id,
        projectId: m.client.project.id,
        credentialId: "credentialId" in m.client ? m.client.credentialId : null,
        actor: "key" in m.client ? `smtp:${m.client.key}` : m.client.actor,
        ip: m.ip,
        mailFrom: m.mailFrom,
        recipients: m.recipients,
        bytes: m.bytes,
        headerMessageId: m.headers.messageId ?? null,
        subject: m.headers.subject ?? null,
        status: statusOf(m),
        deliveryJobId: jobIds.get(m.id) ?? null,
        duplicates: m.duplicates,
        suppressed: m.suppressed,
      })),
    );
    // A duplicate was not stored: its job has nothing to deliver for it.
    const duplicates = new Set(messages.filter((_, i) => !results[i]?.stored).map((m) => m.id));
    for (const job of jobs) {
      const messageIds = job.messageIds.filter((id) => !duplicates.has(id));
      if (messageIds.length > 0) committedJobs.push({ ...job, messageIds });
    }
    return results;
  };

  const afterAnswered = () => {
    const jobs = committedJobs;
    committedJobs = [];
    if (jobs.length > 0) track(enqueue(jobs));
  };
  const commit = createGroupCommit(store, {
    maxItems: options.maxBatchMessages ?? 64,
    // Large messages gain little from sharing a commit, and node-postgres builds each statement
    // in a buffer of its own (a 16 MiB batch held about 48 MB while it was written).
    bytes: { of: (m) => m.bytes.length, max: options.maxBatchBytes ?? 4 * 1024 * 1024 },
    maxInFlight: options.maxBatchesInFlight ?? 2,
    maxHoldMs: options.maxHoldMs ?? 10,
    // Nobody waits for a batch to fill: a message with nothing being written goes at once.
    gatherTick: false,
    // One statement claims a fingerprint once (an ON CONFLICT update cannot touch a row twice):
    // the second of two identical messages goes in the next batch, and is answered as a duplicate.
    keyOf: (m) => (m.duplicates ? `${m.client.project.id}:${m.duplicates.fingerprint}` : m.id),
    afterAnswered,
  });
  const largeMessageBytes = options.largeMessageBytes ?? defaultLargeMessageBytes;
  const isLarge = (message: MessageToAccept) => message.bytes.length >= largeMessageBytes;
  // One message a statement, beside the batches: never sharing one, never holding one up.
  const connect = deps.sql.connect?.bind(deps.sql);
  const writeLarge = connect
    ? ([message]: AcceptedMessage[]) =>
        storeLargeMessage({ connect }, message as AcceptedMessage).then((r) => [r])
    : undefined;
  const commitLarge = createGroupCommit((messages: MessageToAccept[]) => store(messages, writeLarge), {
    maxItems: 1,
    maxInFlight: options.maxLargeInFlight ?? defaultMaxLargeInFlight,
    gatherTick: false,
    afterAnswered,
  });

  /**
   * A batch PostgreSQL refused for one of its rows (a NUL byte in a subject, say, or a deadlock)
   * was rerun message by message by the group commit, so a data exception here is this message's
   * own bytes.
   */
  const outcome = (submitted: Promise<StoreResult>): Promise<AcceptOutcome> =>
    submitted.then(
      (result) => ok({ duplicateOf: result.stored ? undefined : result.firstId }),
      (error: Error) => refuse(refusedContent(error) ? "content_unstorable" : "store_unavailable", { error }),
    );

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

  return {
    expect() {
      const expected = commit.expect();
      return {
        accept(message) {
          if (!isLarge(message)) return outcome(expected.submit(message));
          expected.cancel();
          return outcome(commitLarge.submit(message));
        },
        cancel: () => expected.cancel(),
      };
    },
    accept: (message) => outcome((isLarge(message) ? commitLarge : commit).submit(message)),
    async settled() {
      await Promise.all(enqueuing);
    },
  };
}
