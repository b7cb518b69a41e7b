import libmime from "libmime";
import { type Attachment, simpleParser } from "mailparser";

/**
 * What a message sent to the bounce domain says, read with mailparser (the MIME tree, transfer
 * encodings, charsets) and libmime (the header-style field blocks of the report parts):
 *
 * - a delivery status notification (RFC 3464): `multipart/report; report-type=delivery-status`
 *   with a `message/delivery-status` part (or RFC 6533's `message/global-delivery-status`): a
 *   block of per-message fields, then one block per recipient (`Action`, `Status`,
 *   `Final-Recipient`, `Original-Recipient`, `Diagnostic-Code`…);
 * - a feedback report (RFC 5965 ARF): `multipart/report; report-type=feedback-report` with a
 *   `message/feedback-report` part (`Feedback-Type`, `Original-Mail-From`, `Original-Rcpt-To`…);
 * - anything else (an auto-reply, a bounce in no standard format): `other`.
 *
 * Both reports may enclose the original message (`message/rfc822`) or its header
 * (`text/rfc822-headers`): its header text is kept, where a return path can be found when the
 * report was not sent to one (a feedback loop's own address).
 */
export type Report = DeliveryStatusReport | FeedbackReport | { kind: "other"; subject: string | null };

export interface DeliveryStatusReport {
  kind: "delivery-status";
  subject: string | null;
  reportingMta: string | null;
  arrivalDate: string | null;
  recipients: DsnRecipient[];
  /** The header of the enclosed original message, if any. */
  originalHeader: string | null;
}

export interface DsnRecipient {
  /** `failed`, `delayed`, `delivered`, `relayed`, `expanded` (lower-case). */
  action: string;
  /** The enhanced status code (RFC 3463), e.g. `5.1.1`; null when missing or malformed. */
  status: string | null;
  /** The address of `Final-Recipient` (its address type, e.g. `rfc822;`, dropped). */
  finalRecipient: string | null;
  /** The address of `Original-Recipient`, when the reporting MTA gave it. */
  originalRecipient: string | null;
  /** `Diagnostic-Code` without its type: e.g. `550 5.1.1 <x@example.net>: User unknown`. */
  diagnostic: string | null;
  /** `Remote-MTA` without its type. */
  remoteMta: string | null;
}

export interface FeedbackReport {
  kind: "feedback-report";
  subject: string | null;
  /** `abuse`, `fraud`, `virus`, `other`, `not-spam`, `auth-failure`… (lower-case). */
  feedbackType: string;
  userAgent: string | null;
  /** The address of `Original-Mail-From`: our return path when the reporter kept it. */
  originalMailFrom: string | null;
  /** The addresses of `Original-Rcpt-To` (optional, and often redacted). */
  originalRcptTo: string[];
  arrivalDate: string | null;
  reportingMta: string | null;
  sourceIp: string | null;
  originalHeader: string | null;
}

type Fields = Record<string, string[]>;

/** Reads `raw`; a message mailparser cannot read is `other`. */
export async function readReport(raw: Buffer): Promise<Report> {
  const parsed = await simpleParser(raw, {
    // The report parts and the enclosed message as parts of their own, not merged into the text.
    keepDeliveryStatus: true,
    ignoreEmbedded: true,
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
  });
  const subject = parsed.subject ?? null;
  const contentType = parsed.headers.get("content-type") as
    | { value?: string; params?: Record<string, string> }
    | undefined;
  const reportType =
    contentType?.value === "multipart/report" ? contentType.params?.["report-type"] : undefined;
  const part = (...types: string[]) =>
    parsed.attachments.find((a) => types.includes(a.contentType.toLowerCase()));
  const originalHeader = headerOf(
    part("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"),
  );

  const status = part("message/delivery-status", "message/global-delivery-status");
  if (reportType?.toLowerCase() === "delivery-status" && status) {
    const [perMessage = {}, ...perRecipient] = fieldBlocks(status.content.toString("utf8"));
    return {
      kind: "delivery-status",
      subject,
      reportingMta: typed(first(perMessage, "reporting-mta")),
      arrivalDate: first(perMessage, "arrival-date"),
      recipients: perRecipient
        .filter((fields) => first(fields, "action") !== null)
        .map((fields) => ({
          action: (first(fields, "action") ?? "").toLowerCase(),
          status: /^[245]\.\d{1,3}\.\d{1,3}/.exec(first(fields, "status") ?? "")?.[0] ?? null,
          finalRecipient: address(typed(first(fields, "final-recipient"))),
          originalRecipient: address(typed(first(fields, "original-recipient"))),
          diagnostic: typed(first(fields, "diagnostic-code")),
          remoteMta: typed(first(fields, "remote-mta")),
        })),
      originalHeader,
    };
  }

  const feedback = part("message/feedback-report");
  if (reportType?.toLowerCase() === "feedback-report" && feedback) {
    const [fields = {}] = fieldBlocks(feedback.content.toString("utf8"));
    return {
      kind: "feedback-report",
      subject,
      feedbackType: (first(fields, "feedback-type") ?? "").toLowerCase(),
      userAgent: first(fields, "user-agent"),
      originalMailFrom: address(first(fields, "original-mail-from")),
      originalRcptTo: (fields["original-rcpt-to"] ?? []).flatMap((value) => address(value) ?? []),
      arrivalDate: first(fields, "arrival-date") ?? first(fields, "received-date"),
      reportingMta: typed(first(fields, "reporting-mta")),
      sourceIp: first(fields, "source-ip"),
      originalHeader,
    };
  }
  return { kind: "other", subject };
}

/**
 * The header-style blocks of a report part (RFC 3464 2.1: blocks separated by blank lines), each
 * read by libmime (folded lines joined, names lower-case); empty blocks dropped.
 */
function fieldBlocks(text: string): Fields[] {
  return text
    .split(/\r?\n(?:[ \t]*\r?\n)+/)
    .map((block) =>
      libmime.decodeHeaders(block.replace(/^(?:[ \t]*\r?\n)+/, ""), { skipPrototypeKeys: true }),
    )
    .filter((fields) => Object.keys(fields).some((name) => name !== ""));
}

function first(fields: Fields, name: string): string | null {
  const value = fields[name]?.[0]?.trim();
  return value ? value : null;
}

/** `rfc822; a@example.net` → `a@example.net`; `dns; mx.example.net` → `mx.example.net` (RFC 3464 2.1.2). */
function typed(value: string | null): string | null {
  if (value === null) return null;
  const semicolon = value.indexOf(";");
  return (semicolon >= 0 ? value.slice(semicolon + 1) : value).trim() || null;
}

/** `<a@example.net>` or `a@example.net` → `a@example.net`; anything without an `@` → null. */
function address(value: string | null): string | null {
  if (value === null) return null;
  const bare = value
    .trim()
    .replace(/^<(.*)>$/, "$1")
    .trim();
  return bare.includes("@") ? bare : null;
}

/** The header section of an enclosed message (or a headers-only part): up to its first blank line. */
function headerOf(part: Attachment | undefined): string | null {
  if (!part) return null;
  const text = part.content.toString("utf8");
  const end = text.search(/\r?\n\r?\n/);
  return end >= 0 ? text.slice(0, end) : text;
}
