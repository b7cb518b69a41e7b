import type { AuditAction } from "@postern/audit";
import type { VerificationOutcome } from "@postern/auth";

/**
 * Every reply Postern chooses, in one table (docs/smtp.md lists them for users).
 * The enhanced status code leads the text: smtp-server's own guess from the basic code is
 * suppressed for texts that carry one (see protocol.ts).
 */
export const replies = {
  authBeforeTls: { code: 538, text: "5.7.11 Encryption required: issue STARTTLS first" },
  authRequired: { code: 530, text: "5.7.0 Authentication required" },
  authInvalid: { code: 535, text: "5.7.8 Authentication credentials invalid" },
  authBlocked: { code: 421, text: "4.7.0 Too many failed authentication attempts" },
  authUnavailable: { code: 454, text: "4.3.0 Temporary authentication failure, try again later" },
  tooManyConnections: { code: 421, text: "4.7.0 Too many connections" },
  tooManyConnectionsFromIp: { code: 421, text: "4.7.0 Too many connections from your address" },
  shuttingDown: { code: 421, text: "4.3.2 Service shutting down, try again later" },
  // Deadlines and the error limit (docs/security.md, Limits and deadlines). 4.4.2 is a timed-out
  // connection (RFC 3463), as Postfix's "421 4.4.2 Error: timeout exceeded".
  authDeadline: { code: 421, text: "4.4.2 Not authenticated in time, closing connection" },
  dataDeadline: { code: 421, text: "4.4.2 Message not received in time, closing connection" },
  // Postfix's reply at smtpd_hard_error_limit.
  tooManyErrors: { code: 421, text: "4.7.0 Too many errors, closing connection" },
  projectSuspended: { code: 550, text: "5.7.1 Project suspended" },
  credentialRevoked: { code: 550, text: "5.7.1 Credential revoked, authenticate again" },
  senderSyntax: { code: 553, text: "5.1.7 Sender address syntax invalid" },
  senderDomain: { code: 553, text: "5.7.1 Sender domain not allowed for this project" },
  recipientSyntax: { code: 553, text: "5.1.3 Recipient address syntax invalid" },
  // RFC 6531 3.4: a non-ASCII mailbox in a transaction that did not declare SMTPUTF8.
  smtpUtf8Required: { code: 553, text: "5.6.7 Non-ASCII address needs the SMTPUTF8 parameter in MAIL FROM" },
  // The project's route for this recipient is `reject` (docs/routing.md).
  rejectedByRoute: { code: 550, text: "5.7.1 Recipient refused by the project's routes" },
  // The recipient (or its domain) is on the project's suppressions (docs/suppressions.md); the
  // reason follows the text. Permanent, as Postmark's and SES's "inactive recipient": a retry
  // would be refused again until the project removes the suppression.
  recipientSuppressed: { code: 550, text: "5.7.1 Recipient suppressed by the project" },
  tooManyRecipients: { code: 452, text: "4.5.3 Too many recipients" },
  quotaExceeded: { code: 451, text: "4.7.1 Sending quota exceeded" },
  storeUnavailable: { code: 451, text: "4.3.0 Temporary local problem, try again later" },
  messageTooBig: { code: 552, text: "5.3.4 Message too big" },
  headerFromDomain: { code: 550, text: "5.7.1 From header domain not allowed for this project" },
  headerFromUnverified: {
    code: 553,
    text: "5.7.1 From header domain is not a verified domain of this project",
  },
  headerFromMissing: { code: 550, text: "5.7.1 Message needs one From header with an address" },
  // RFC 5322 3.6: one From field. With two, which one a reader shows is the reader's choice.
  headerFromMultiple: { code: 550, text: "5.6.0 Message has more than one From header (RFC 5322 3.6)" },
  // PostgreSQL refused the message's own data: the same message would be refused again, so a
  // temporary reply would have the client retry forever.
  contentUnstorable: { code: 554, text: "5.6.0 Message content cannot be stored" },
  // As Postfix's smtpd_forbid_bare_newline: the client's line endings are broken or it is
  // attempting SMTP smuggling; either way the rest of its stream cannot be trusted, so disconnect.
  bareNewline: { code: 521, text: "5.5.2 Bare CR or LF received, lines must end with CRLF (RFC 5321 2.3.8)" },
  // A project rule's `deny` (docs/rules.md); the rule's name follows the text. At RCPT for rules
  // of the envelope (that recipient only), after DATA for rules of the content.
  ruleDenied: { code: 550, text: "5.7.1 Refused by a rule of the project" },
  // The project's content rules cannot be judged on it (more MIME parts or a larger header block
  // than packages/rules reads): refused, as a rule must not be escaped by nesting deeper.
  rulesUnreadable: { code: 554, text: "5.6.0 Message too complex to check against the project's rules" },
} as const satisfies Record<string, SmtpReply>;

export interface SmtpReply {
  code: number;
  /** Starts with the enhanced status code. */
  text: string;
}

export function accepted(messageId: string): string {
  return `2.0.0 Ok: queued as ${messageId}`;
}

/** An Error smtp-server turns into the reply (its handlers take errors with `responseCode`). */
export function smtpError(reply: SmtpReply, detail?: string): Error & { responseCode: number } {
  return Object.assign(new Error(detail ? `${reply.text} (${detail})` : reply.text), {
    responseCode: reply.code,
  });
}

/** Failed AUTH outcomes: reply, audit action, and the stable reason written in the audit details. */
export const authFailures: Record<
  Exclude<VerificationOutcome, { ok: true }>["reason"],
  { reply: SmtpReply; audit: AuditAction | undefined }
> = {
  unknown_key: { reply: replies.authInvalid, audit: "auth.failure" },
  bad_secret: { reply: replies.authInvalid, audit: "auth.failure" },
  revoked: { reply: replies.authInvalid, audit: "auth.failure" },
  // 535 rather than 550: AUTH is where the client can be told (docs/smtp.md).
  suspended: { reply: replies.authInvalid, audit: "auth.failure" },
  blocked: { reply: replies.authBlocked, audit: "auth.blocked" },
  // Not the client's fault: nothing to audit against it.
  unavailable: { reply: replies.authUnavailable, audit: undefined },
};

/**
 * Why a message (or the transaction that would have carried it) was refused: the stable
 * `details.reason` of `message.rejected` audit events (the API's /v1/stats counts them) and the
 * `reason` label of postern_smtp_messages_rejected_total.
 */
export type RejectionReason =
  | "suspended"
  | "revoked"
  | "sender_syntax"
  | "sender_domain"
  | "recipient_syntax"
  | "smtputf8_required"
  | "too_many_recipients"
  | "route_reject"
  | "suppressed"
  | "quota"
  | "size"
  | "bare_lf"
  | "header_from"
  | "header_from_multiple"
  | "header_from_unverified"
  | "content_unstorable"
  | "rule"
  | "rules_unreadable"
  | "store_unavailable";

export const rejections: Record<RejectionReason, SmtpReply> = {
  suspended: replies.projectSuspended,
  revoked: replies.credentialRevoked,
  sender_syntax: replies.senderSyntax,
  sender_domain: replies.senderDomain,
  recipient_syntax: replies.recipientSyntax,
  smtputf8_required: replies.smtpUtf8Required,
  too_many_recipients: replies.tooManyRecipients,
  route_reject: replies.rejectedByRoute,
  suppressed: replies.recipientSuppressed,
  quota: replies.quotaExceeded,
  size: replies.messageTooBig,
  bare_lf: replies.bareNewline,
  header_from: replies.headerFromDomain,
  header_from_multiple: replies.headerFromMultiple,
  header_from_unverified: replies.headerFromUnverified,
  content_unstorable: replies.contentUnstorable,
  rule: replies.ruleDenied,
  rules_unreadable: replies.rulesUnreadable,
  store_unavailable: replies.storeUnavailable,
};
