import type { MessageStatus, RecipientStatus } from "@postern/db";

/**
 * The status machine of a message: every status change anywhere goes through this table (the
 * worker's record statement guards on it, the retry statement too). docs/delivery.md shows it.
 * A message is created `queued`, `held` (a rule's hold) or `sandboxed` (a sandbox project) by the
 * accept statement.
 */
export const allowedTransitions = {
  queued: ["delivered", "deferred", "failed", "cancelled"],
  // `queued` from `deferred`: a retry asked for before the backoff ran out.
  deferred: ["queued", "delivered", "deferred", "failed", "cancelled"],
  failed: ["queued"],
  delivered: [],
  // Only the record of an attempt that was already on the wire when the cancel committed (the
  // record's attempt-count guard proves it was loaded before): the upstream answered, so the
  // message is what it answered. An attempt that ended deferred is not recorded: the message
  // stays cancelled and is never tried again (docs/delivery.md).
  cancelled: ["delivered", "failed"],
  // approve (by hand or the hold expiry), deny (the same), cancel.
  held: ["queued", "denied", "cancelled"],
  denied: [],
  sandboxed: [],
} as const satisfies Record<MessageStatus, readonly MessageStatus[]>;

/**
 * The status machine of a message's recipients. The worker's record moves a pending recipient to
 * what the upstream answered (it stays pending while that defers), a retry makes a failed one pending;
 * a recipient the upstream accepted may later be reported `bounced` (a delivery status
 * notification) or `complained` (a feedback report) by the inbound role (reports.ts), which
 * guards on this table. The message's own status stays what delivery made it.
 */
export const allowedRecipientTransitions = {
  pending: ["delivered", "failed"],
  failed: ["pending"],
  delivered: ["bounced", "complained"],
  bounced: [],
  complained: [],
} as const satisfies Record<RecipientStatus, readonly RecipientStatus[]>;

/** The recipient statuses that may move to `to`, for the guards of the SQL statements. */
export function recipientStatusesBefore(to: RecipientStatus): RecipientStatus[] {
  return (Object.keys(allowedRecipientTransitions) as RecipientStatus[]).filter((from) =>
    (allowedRecipientTransitions[from] as readonly RecipientStatus[]).includes(to),
  );
}

/**
 * The lifecycle actions a project or an operator may take on a message (one by one or in bulk),
 * each a move of the table above from the statuses it names (retry and approve both lead to
 * `queued`, from different statuses), with the event (and audit action) it writes.
 */
export const lifecycleActions = {
  retry: { from: ["deferred", "failed"], to: "queued", event: "message.retried" },
  cancel: { from: ["queued", "deferred", "held"], to: "cancelled", event: "message.cancelled" },
  approve: { from: ["held"], to: "queued", event: "message.approved" },
  deny: { from: ["held"], to: "denied", event: "message.denied" },
} as const satisfies Record<string, { from: readonly MessageStatus[]; to: MessageStatus; event: string }>;

export type LifecycleAction = keyof typeof lifecycleActions;

export type TransitionResult =
  | { ok: true }
  | { ok: false; reason: "invalid_transition"; from: MessageStatus; to: MessageStatus };

export function checkTransition(from: MessageStatus, to: MessageStatus): TransitionResult {
  const allowed: readonly MessageStatus[] = allowedTransitions[from];
  return allowed.includes(to) ? { ok: true } : { ok: false, reason: "invalid_transition", from, to };
}

/** Whether `action` applies to a message in status `from`. */
export function checkAction(action: LifecycleAction, from: MessageStatus): TransitionResult {
  const { from: allowed, to } = lifecycleActions[action];
  return (allowed as readonly MessageStatus[]).includes(from)
    ? { ok: true }
    : { ok: false, reason: "invalid_transition", from, to };
}

/** The statuses a message may move to `to` from, for the guards of the SQL statements. */
export function statusesBefore(...targets: MessageStatus[]): MessageStatus[] {
  return (Object.keys(allowedTransitions) as MessageStatus[]).filter((from) =>
    targets.every((to) => checkTransition(from, to).ok),
  );
}

/**
 * `('queued', 'delivered'), …`: every allowed (from, to) pair whose `to` is one of `targets`, for
 * a guard that depends on the status a row moves to (`(from, to) IN (…)`).
 */
export function sqlTransitionPairs(...targets: MessageStatus[]): string {
  return (Object.entries(allowedTransitions) as Array<[MessageStatus, readonly MessageStatus[]]>)
    .flatMap(([from, tos]) => tos.filter((to) => targets.includes(to)).map((to) => `('${from}', '${to}')`))
    .join(", ");
}

/**
 * The statuses the worker may deliver from (queued, deferred): those that may move to every
 * outcome of an attempt. A job that finds its message in any other status ends without sending
 * (final, or held: a stale job never bypasses a hold).
 */
export const deliverableStatuses: readonly MessageStatus[] = statusesBefore(
  "delivered",
  "deferred",
  "failed",
);

/** `'a', 'b'` for an `IN (…)` guard; the values come from the tables above, never from input. */
export function sqlList(statuses: readonly (MessageStatus | RecipientStatus)[]): string {
  return statuses.map((status) => `'${status}'`).join(", ");
}
