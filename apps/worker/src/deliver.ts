import { openSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type MessageStatus, uuidv7 } from "@postern/db";
import { type DeliveryStore, deliverableStatuses, type StoredMessage } from "@postern/messages";
import { retryDelayMs } from "@postern/queue";
import type { ConnectionBusy, DeliveryOutcome, RecipientVerdict, UpstreamTransports } from "@postern/relay";

export interface DeliveryDeps {
  config: Pick<ResolvedConfig, "encryptionKey" | "delivery">;
  store: DeliveryStore;
  transports: UpstreamTransports;
}

/** What one run of a delivery job came to. */
export type DeliveryRun =
  | { kind: "skipped"; reason: "unknown_message" }
  /** Final, or waiting for something other than delivery (held). */
  | { kind: "skipped"; reason: "not_deliverable"; projectId: string }
  | { kind: "delivered"; projectId: string; acceptedAt: Date }
  | { kind: "failed"; projectId: string; reason: string }
  | { kind: "deferred"; projectId: string; retryInMs: number }
  /** Another run of the same message recorded its result first (a stalled job ran twice). */
  | { kind: "superseded"; projectId: string }
  /**
   * Not tried: no connection of its project or upstream could be had now. Nothing is recorded;
   * the job goes back to the queue for `retryInMs` rather than hold a worker slot.
   */
  | { kind: "given_back"; retryInMs: number; reason: ConnectionBusy["reason"] };

type RecipientState = "pending" | "delivered" | "failed";

/** A message after its attempt at the upstream, its body let go: what the record is made of. */
interface Sent {
  message: Omit<StoredMessage, "body">;
  startedAt: Date;
  durationMs: number;
  upstreamHost: string;
  verdicts: RecipientVerdict[];
  transaction: { code: number | null; enhancedCode: string | null; response: string } | undefined;
}

/**
 * One delivery attempt of one message: read it from PostgreSQL (one query), send it to the
 * pending recipients over one of the project's upstream connections, and record the attempt, every
 * recipient's result, the message's new status, its event and, when final, its audit event in
 * one statement (`DeliveryStore` of @postern/messages).
 *
 * The read and the send take one of the project's connection turns (`projectId`, known from the
 * job; jobs enqueued before it was carried go without), so that a worker holds at most a body
 * per connection. A delivery that cannot have a connection soon is given back rather than wait
 * (see `UpstreamTransports.whenConnectionFree`); one whose upstream is suspended (circuit open)
 * is recorded as a deferred attempt with the suspension as its reason, without a connection. The record does not: it waits for a commit shared with other deliveries, and a
 * turn held through it would leave the connection idle, capping a project's rate at its
 * connections divided by the whole attempt's time instead of the exchange's.
 *
 * At least once: a crash after the upstream's 250 and before that statement commits sends the
 * message again on the next run (see docs/delivery.md).
 */
export async function deliverMessage(
  deps: DeliveryDeps,
  messageId: string,
  projectId?: string,
): Promise<DeliveryRun> {
  const send = () => loadAndSend(deps, messageId);
  const sent = await (projectId ? deps.transports.whenConnectionFree(projectId, send, givenBack) : send());
  return "kind" in sent ? sent : record(deps, sent);
}

async function loadAndSend(deps: DeliveryDeps, messageId: string): Promise<Sent | DeliveryRun> {
  const loaded = await deps.store.load(messageId);
  if (!loaded) return { kind: "skipped", reason: "unknown_message" };
  const { body, ...message } = loaded;
  // Only queued and deferred messages are sent: a job still queued for a message since delivered,
  // failed, cancelled or denied ends here without sending, and so does a stale job that names a
  // held or sandboxed message (the load reads the status of the moment; see docs/delivery.md).
  if (!deliverableStatuses.includes(message.status)) {
    return { kind: "skipped", reason: "not_deliverable", projectId: message.projectId };
  }
  const pending = message.recipients.filter((r) => r.status === "pending");
  const startedAt = new Date();

  let upstreamHost = message.upstreamUrl;
  let verdicts: RecipientVerdict[];
  let transaction: Sent["transaction"];
  if (!body) {
    // Retention never prunes pending messages; a missing body means the row was damaged by hand.
    const response = "message body is missing; it cannot be delivered";
    verdicts = pending.map((r) => ({
      address: r.address,
      outcome: "failed",
      code: null,
      enhancedCode: null,
      response,
    }));
  } else if (pending.length > 0) {
    const password = message.upstreamSecret
      ? openSecret(message.upstreamSecret, deps.config.encryptionKey)
      : undefined;
    const result = await deps.transports.relay(
      { projectId: message.projectId, upstreamUrl: message.upstreamUrl, password },
      {
        mailFrom: message.mailFrom,
        recipients: pending.map((r) => r.address),
        raw: body,
      },
    );
    if (result.busy) return givenBack(result.busy);
    upstreamHost = result.upstreamHost;
    verdicts = result.recipients;
    transaction = result.verdict;
  } else {
    verdicts = [];
  }
  const durationMs = Date.now() - startedAt.getTime();
  return { message, startedAt, durationMs, upstreamHost, verdicts, transaction };
}

function givenBack(busy: ConnectionBusy): DeliveryRun {
  return { kind: "given_back", retryInMs: busy.retryInMs, reason: busy.reason };
}

async function record(deps: DeliveryDeps, sent: Sent): Promise<DeliveryRun> {
  const { store, config } = deps;
  const { message, startedAt, durationMs, upstreamHost, verdicts, transaction } = sent;
  const attemptNumber = message.attempts + 1;

  const exhausted = attemptNumber >= config.delivery.maxAttempts;
  const stateOf = (outcome: DeliveryOutcome): RecipientState =>
    outcome === "deferred" ? (exhausted ? "failed" : "pending") : outcome;
  const results = verdicts.map((verdict) => ({ ...verdict, state: stateOf(verdict.outcome) }));
  const resultByAddress = new Map(results.map((r) => [r.address, r]));
  const finalStates = message.recipients.map((r) => resultByAddress.get(r.address)?.state ?? r.status);
  const status: MessageStatus = finalStates.includes("pending")
    ? "deferred"
    : finalStates.includes("delivered")
      ? "delivered"
      : "failed";
  const problem = results.find((r) => r.state !== "delivered");
  const lastError = problem ? `${problem.address}: ${problem.response}` : null;
  const retryInMs = retryDelayMs(attemptNumber, config.delivery.backoffSeconds);
  const now = new Date();
  const final = status === "delivered" || status === "failed";

  const updated = message.recipients.flatMap((recipient) => {
    const result = resultByAddress.get(recipient.address);
    return result
      ? [
          {
            id: recipient.id,
            status: result.state,
            code: result.code,
            enhancedCode: result.enhancedCode,
            response: result.response,
          },
        ]
      : [];
  });
  // Every recipient as it stands after this attempt: the event's data and the final audit's.
  const recipientResults = message.recipients.map((r) => {
    const result = resultByAddress.get(r.address);
    return {
      address: r.address,
      status: result?.state ?? r.status,
      code: result?.code ?? r.code,
      enhancedCode: result?.enhancedCode ?? r.enhancedCode,
      response: result?.response ?? r.response,
    };
  });
  const recorded = await store.record({
    messageId: message.id,
    loadedAttempts: message.attempts,
    status,
    nextAttemptAt: status === "deferred" ? new Date(now.getTime() + retryInMs) : null,
    lastError,
    now,
    attempt: {
      id: uuidv7(startedAt.getTime()),
      number: attemptNumber,
      startedAt,
      durationMs,
      upstreamHost,
      code: transaction?.code ?? results[0]?.code ?? null,
      enhancedCode: transaction?.enhancedCode ?? results[0]?.enhancedCode ?? null,
      response: transaction?.response ?? results[0]?.response ?? null,
      recipients: results.map(({ address, outcome, code, enhancedCode, response }) => ({
        address,
        outcome,
        code,
        enhancedCode,
        response,
      })),
    },
    recipients: updated,
    audit: final
      ? {
          action: status === "delivered" ? "message.delivered" : "message.failed",
          details: {
            messageId: message.id,
            attempts: attemptNumber,
            upstreamHost,
            recipients: recipientResults,
          },
        }
      : null,
    event: { attempt: attemptNumber, upstreamHost, recipients: recipientResults },
  });

  if (!recorded) return { kind: "superseded", projectId: message.projectId };
  if (status === "delivered")
    return { kind: "delivered", projectId: message.projectId, acceptedAt: message.createdAt };
  if (status === "failed")
    return { kind: "failed", projectId: message.projectId, reason: lastError ?? "failed" };
  return { kind: "deferred", projectId: message.projectId, retryInMs };
}
