import { recordAudit } from "@postern/audit";
import type { Database } from "@postern/db";
import {
  findReportedMessage,
  type ReportedMessage,
  type ReportedRecipient,
  recordRecipientReport,
} from "@postern/messages";
import { type SuppressionServiceDeps, suppressRecipient } from "@postern/projects";
import type { ReturnPaths } from "@postern/verp";
import { type DeliveryStatusReport, type FeedbackReport, type Report, readReport } from "./reports";

/**
 * What becomes of one message received on the bounce domain (docs/bounces.md): its report is
 * read, the message it is about found through a return path, the recipients it names matched
 * to that message's, and the result stored (recipients marked, event, audit, suppression)
 * before the caller answers 250. Expected outcomes are values; a database failure throws (the
 * caller answers 451 and the reporting MTA tries again: every step is safe to repeat).
 */
export type ReceiveOutcome =
  | {
      kind: "recorded";
      status: "bounced" | "complained";
      messageId: string;
      marked: string[];
      suppressed: string[];
    }
  /** Every recipient it names was already marked so (a report sent twice): nothing new written. */
  | { kind: "duplicate"; messageId: string; suppressed: string[] }
  /** A report that changes nothing: a delay or success notice, a feedback report that is no complaint. */
  | { kind: "ignored"; reason: IgnoredReason; messageId: string }
  /** It names a recipient whose delivery is not recorded yet: 451, the reporting MTA retries. */
  | { kind: "retry_later"; messageId: string }
  /** Audited as `inbound.unmatched`, then accepted. */
  | { kind: "unmatched"; reason: UnmatchedReason; messageId: string | null };

export type IgnoredReason = "delayed" | "not_failed" | "not_a_complaint" | "not_delivered";

export type UnmatchedReason =
  /** Neither a delivery status notification nor a feedback report (an auto-reply, a free-form bounce). */
  | "not_a_report"
  /** A report, but no return path of ours in the envelope or in it. */
  | "no_return_path"
  /** A return path in the report (not the envelope) whose token does not check. */
  | "forged_return_path"
  /** An authentic return path whose message is gone. */
  | "unknown_message"
  /** The message is found, but none of the report's recipients is one of its recipients. */
  | "unknown_recipient";

/**
 * Feedback types that are a recipient's complaint (RFC 5965 7.3). `not-spam` says the opposite,
 * `auth-failure` (RFC 6591) is about authentication, not the recipient's wish.
 */
const complaintTypes = new Set(["abuse", "fraud", "virus", "other"]);

export interface ReceiveDeps {
  db: Database;
  returnPaths: ReturnPaths;
  /** For `suppressRecipient`: adds the entry, audits it and drops the project's cached policy everywhere. */
  suppressions: SuppressionServiceDeps;
}

export interface ReceivedMail {
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  ip: string | null;
}

export async function receiveReport(deps: ReceiveDeps, mail: ReceivedMail): Promise<ReceiveOutcome> {
  const report = await readReport(mail.raw).catch((): Report => ({ kind: "other", subject: null }));
  const unmatched = async (reason: UnmatchedReason, message?: ReportedMessage): Promise<ReceiveOutcome> => {
    await recordAudit(deps.db, {
      action: "inbound.unmatched",
      actor: "system",
      projectId: message?.projectId ?? null,
      ip: mail.ip,
      details: {
        reason,
        messageId: message?.id ?? null,
        mailFrom: mail.mailFrom,
        rcptTo: mail.rcptTo,
        report: report.kind,
        subject: report.subject?.slice(0, 200) ?? null,
        size: mail.raw.length,
      },
    });
    return { kind: "unmatched", reason, messageId: message?.id ?? null };
  };

  const found = findReturnPath(deps.returnPaths, mail.rcptTo, report);
  const message = found.ok ? await findReportedMessage(deps.db, found.messageId) : undefined;
  // The message, when known, names the project whose audit log shows the unmatched mail.
  if (report.kind === "other") return unmatched("not_a_report", message);
  if (!found.ok) return unmatched(found.reason);
  if (!message) return unmatched("unknown_message");

  const judged =
    report.kind === "delivery-status" ? judgeBounce(report, message) : judgeComplaint(report, message);
  if ("ignored" in judged) return { kind: "ignored", reason: judged.ignored, messageId: message.id };
  if (judged.recipients.length === 0) return unmatched("unknown_recipient", message);

  const byId = new Map(message.recipients.map((r) => [r.id, r]));
  const states = judged.recipients.map((r) => byId.get(r.id)?.status);
  if (states.includes("pending")) return { kind: "retry_later", messageId: message.id };
  const toMark = judged.recipients.filter((r) => byId.get(r.id)?.status === "delivered");
  const already = judged.recipients.filter((r) => byId.get(r.id)?.status === judged.status);
  if (toMark.length === 0 && already.length === 0)
    return { kind: "ignored", reason: "not_delivered", messageId: message.id };

  const marked = await recordRecipientReport(deps.db, {
    projectId: message.projectId,
    messageId: message.id,
    status: judged.status,
    recipients: toMark,
    report: judged.report,
    ip: mail.ip,
  });
  // Also for the recipients already marked: a report repeated after a failure between the mark
  // and the suppression (the reporting MTA heard no 250) completes it.
  const suppressed: string[] = [];
  if (message.autoSuppress) {
    for (const recipient of [...toMark, ...already].filter((r) => judged.suppress(r))) {
      const address = byId.get(recipient.id)?.address as string;
      await suppressRecipient(
        deps.suppressions,
        message.projectId,
        address,
        judged.status === "bounced" ? "hard_bounce" : "complaint",
        message.id,
      );
      suppressed.push(address.toLowerCase());
    }
  }
  return marked.length > 0
    ? { kind: "recorded", status: judged.status, messageId: message.id, marked, suppressed }
    : { kind: "duplicate", messageId: message.id, suppressed };
}

type Found = { ok: true; messageId: string } | { ok: false; reason: "no_return_path" | "forged_return_path" };

/**
 * The message a report is about: the return path it was sent to (checked at RCPT already), else
 * the one a feedback report names as `Original-Mail-From`, else one in the header of the
 * enclosed original message (`Return-Path`, added at final delivery). Feedback loops send to an
 * address of their own (postmaster@ or abuse@ the bounce domain), not to the return path.
 */
function findReturnPath(paths: ReturnPaths, rcptTo: string[], report: Report): Found {
  const candidates = [
    ...rcptTo,
    ...(report.kind === "feedback-report" && report.originalMailFrom ? [report.originalMailFrom] : []),
    ...(report.kind !== "other" && report.originalHeader
      ? (report.originalHeader.match(verpAddresses(paths.domain)) ?? [])
      : []),
  ];
  let forged = false;
  for (const candidate of candidates) {
    const reading = paths.read(candidate);
    if (reading.ok) return { ok: true, messageId: reading.messageId };
    if (reading.reason === "forged") forged = true;
  }
  return { ok: false, reason: forged ? "forged_return_path" : "no_return_path" };
}

function verpAddresses(domain: string): RegExp {
  return new RegExp(`bounce\\+[a-z2-7]+@${domain.replaceAll(".", "\\.")}`, "gi");
}

type Judged =
  | { ignored: IgnoredReason }
  | {
      status: "bounced" | "complained";
      recipients: ReportedRecipient[];
      report: Record<string, unknown>;
      /** Whether the recipient goes on the suppressions (with the project's autoSuppress). */
      suppress(recipient: ReportedRecipient): boolean;
    };

/**
 * A DSN's failed recipients (`Action: failed`), each matched by its `Original-Recipient` or
 * `Final-Recipient`; one the message cannot match is left out, except that a message with one
 * recipient is about that one whatever address the report gives (a forwarding hop may have
 * rewritten it). A delay notice (`delayed`) or a success notice marks nothing. The recipient is
 * suppressed, as the worker's 5.1.x failure is, when the status says the address does not exist
 * (5.1.x): a mailbox full (5.2.2) or a message refused for its content (5.7.x) says nothing about
 * the address.
 */
function judgeBounce(report: DeliveryStatusReport, message: ReportedMessage): Judged {
  const failed = report.recipients.filter((r) => r.action === "failed");
  if (failed.length === 0)
    return { ignored: report.recipients.some((r) => r.action === "delayed") ? "delayed" : "not_failed" };
  const recipients = new Map<string, ReportedRecipient>();
  for (const entry of failed) {
    const recipient =
      matchRecipient(message, [entry.originalRecipient, entry.finalRecipient]) ??
      (message.recipients.length === 1 ? message.recipients[0] : undefined);
    if (!recipient || recipients.has(recipient.id)) continue;
    const diagnostic = entry.diagnostic?.slice(0, 1000) ?? null;
    recipients.set(recipient.id, {
      id: recipient.id,
      code: Number(/^([245]\d\d)\b/.exec(diagnostic ?? "")?.[1] ?? Number.NaN) || null,
      enhancedCode: entry.status,
      response: diagnostic ?? `Action: failed; Status: ${entry.status ?? "unknown"}`,
    });
  }
  const entries = [...recipients.values()];
  return {
    status: "bounced",
    recipients: entries,
    report: {
      type: "delivery-status",
      reportingMta: report.reportingMta,
      arrivalDate: report.arrivalDate,
      remoteMta: failed.find((r) => r.remoteMta)?.remoteMta ?? null,
    },
    suppress: (recipient) => recipient.enhancedCode?.startsWith("5.1.") === true,
  };
}

/**
 * A feedback report of a complaint type: the recipients its `Original-Rcpt-To` fields name, or,
 * when it names none the message has (often redacted), the message's one recipient. Every
 * complained recipient is suppressed (with the project's autoSuppress).
 */
function judgeComplaint(report: FeedbackReport, message: ReportedMessage): Judged {
  if (!complaintTypes.has(report.feedbackType)) return { ignored: "not_a_complaint" };
  const named = report.originalRcptTo.flatMap((address) => matchRecipient(message, [address]) ?? []);
  const matched = named.length > 0 ? named : message.recipients.length === 1 ? message.recipients : [];
  const response = `feedback report: ${report.feedbackType}${report.userAgent ? ` (${report.userAgent})` : ""}`;
  return {
    status: "complained",
    recipients: [...new Map(matched.map((r) => [r.id, r])).values()].map((r) => ({
      id: r.id,
      code: null,
      enhancedCode: null,
      response: response.slice(0, 1000),
    })),
    report: {
      type: "feedback-report",
      feedbackType: report.feedbackType,
      userAgent: report.userAgent,
      reportingMta: report.reportingMta,
      sourceIp: report.sourceIp,
      arrivalDate: report.arrivalDate,
    },
    suppress: () => true,
  };
}

/** The message's recipient with the first of `addresses` it has (case-insensitive). */
function matchRecipient(message: ReportedMessage, addresses: (string | null)[]) {
  for (const address of addresses) {
    if (!address) continue;
    const found = message.recipients.find((r) => r.address.toLowerCase() === address.toLowerCase());
    if (found) return found;
  }
  return undefined;
}
