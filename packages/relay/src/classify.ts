/**
 * The one place where an upstream's answer becomes a delivery outcome (docs/delivery.md, Classification):
 * 2xx delivered; 4xx, network and TLS trouble deferred (retried on DELIVERY_BACKOFF); 5xx failed.
 */
export type DeliveryOutcome = "delivered" | "deferred" | "failed";

export interface UpstreamVerdict {
  outcome: DeliveryOutcome;
  /** The upstream's reply code, or null when it never answered (refused, timeout, TLS). */
  code: number | null;
  /** RFC 3463 enhanced status code from the reply text, when the upstream sent one. */
  enhancedCode: string | null;
  /** The upstream's own words, or what went wrong on the way to it. */
  response: string;
}

/** What nodemailer's SMTP client reports on an error (its `code` names the phase that failed). */
export interface SmtpClientError {
  code?: string;
  responseCode?: number;
  response?: string;
  message: string;
}

/**
 * Phases (nodemailer error codes) whose replies are not read by their code, because the reply is
 * about the session, not about the message:
 * - EAUTH: an authentication failure (535) is deferred, as Postfix does: a wrong stored upstream
 *   password is a configuration problem the operator fixes, and failing every message at once
 *   would turn a typo into lost mail.
 * - ETLS: a refused STARTTLS (502/454) with `?tls=required` is a TLS error, deferred like any other.
 */
const outcomeByPhase: Record<string, DeliveryOutcome> = { EAUTH: "deferred", ETLS: "deferred" };

export function outcomeOfReplyCode(code: number): DeliveryOutcome {
  if (code >= 200 && code < 300) return "delivered";
  if (code >= 500 && code < 600) return "failed";
  // 4xx, and anything outside the SMTP ranges (a broken upstream), is worth another try.
  return "deferred";
}

/** Splits "550 5.1.1 <x@y>: no such user" into code 550, enhanced "5.1.1" and the text. */
export function parseReply(reply: string): { code: number | null; enhancedCode: string | null } {
  const match = /^(\d{3})[ -](?:([245]\.\d{1,3}\.\d{1,3})\b)?/.exec(reply.trim());
  if (!match) return { code: null, enhancedCode: null };
  return { code: Number(match[1]), enhancedCode: match[2] ?? null };
}

/** Longest upstream text stored per attempt and recipient (a reply can be many lines long). */
const maxResponseLength = 2_000;

/**
 * An upstream's words as they can be stored: PostgreSQL text and jsonb cannot hold NUL, and a
 * reply that could not be recorded would fail its delivery forever (re-sending the message each
 * time), so NUL bytes are dropped; very long replies are cut.
 */
function storable(text: string): string {
  return text.replaceAll("\0", "").trim().slice(0, maxResponseLength);
}

export function verdictOfReply(reply: string, fallbackCode?: number): UpstreamVerdict {
  const parsed = parseReply(reply);
  const code = parsed.code ?? fallbackCode ?? null;
  return {
    outcome: code === null ? "deferred" : outcomeOfReplyCode(code),
    code,
    enhancedCode: parsed.enhancedCode,
    response: storable(reply),
  };
}

export function verdictOfError(error: SmtpClientError): UpstreamVerdict {
  const byPhase = error.code ? outcomeByPhase[error.code] : undefined;
  if (error.responseCode !== undefined) {
    const verdict = error.response
      ? verdictOfReply(error.response, error.responseCode)
      : { ...verdictOfReply("", error.responseCode), response: storable(error.message) };
    // A session-level refusal says what was refused, not only the upstream's words.
    return byPhase
      ? { ...verdict, outcome: byPhase, response: storable(`${error.message}: ${verdict.response}`) }
      : verdict;
  }
  // No reply at all: refused, reset, timed out, TLS handshake failed. The network or the
  // upstream may recover, so it is retried.
  return {
    outcome: byPhase ?? "deferred",
    code: null,
    enhancedCode: null,
    response: storable(error.message),
  };
}
