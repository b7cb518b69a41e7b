import { createHash, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { recordAudit } from "@postern/audit";
import type { ApiTokenVerifier, ProjectPolicy } from "@postern/auth";
import { type SqlPool, uuidv7 } from "@postern/db";
import { messageStored, type SuppressedRecipient, startFingerprint } from "@postern/messages";
import type { SuppressionBook } from "@postern/projects";
import type { ProjectQuota } from "@postern/quota";
import { inspectContent, type RulesCache } from "@postern/rules";
import {
  type Acceptor,
  checkHeaderFrom,
  httpReceivedHeader,
  isMailbox,
  observeContent,
  readMessageData,
  senderDomainAllowed,
  summariseHeaders,
} from "@postern/smtp";
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { type FastifyPluginAsyncZod, hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import addressparser from "nodemailer/lib/addressparser";
import MailComposer from "nodemailer/lib/mail-composer";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, type ApiErrorCode, errorResponses, projectRouteErrors } from "../errors";
import { claimIdempotencyKey } from "../idempotency";

/**
 * HTTP submission, `POST /v1/messages`: a message composed from JSON (nodemailer's MailComposer),
 * or raw `message/rfc822` bytes with the envelope in the query. The checks are SMTP's, with SMTP's
 * reasons (sender-policy.ts and message.ts of apps/smtp), the message is stored by the same
 * acceptor (one durable commit, then a delivery job), and `202 {id}` is answered after the commit,
 * as SMTP's 250.
 */

/** Why a submission is refused: SMTP's rejection reasons where they apply, and HTTP's own. */
export type SubmissionRefusal =
  | "suspended"
  | "sender_syntax"
  | "sender_domain"
  | "recipient_syntax"
  | "too_many_recipients"
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
  | "store_unavailable"
  | "invalid_message"
  | "unsupported_media_type"
  | "idempotency_key_reused";

/** Every refusal's HTTP status and error code, in one table (docs/api.md lists them). */
export const submissionRefusals: Record<SubmissionRefusal, { code: ApiErrorCode; message: string }> = {
  suspended: { code: "project_suspended", message: "the project is suspended" },
  sender_syntax: {
    code: "invalid_sender",
    message: "the sender address is not a valid mailbox",
  },
  sender_domain: {
    code: "sender_not_allowed",
    message: "the sender's domain is not one of the project's sender domains",
  },
  recipient_syntax: {
    code: "invalid_recipient",
    message: "a recipient address is not a valid mailbox",
  },
  too_many_recipients: {
    code: "too_many_recipients",
    message: "more recipients than the project allows",
  },
  suppressed: {
    code: "recipients_suppressed",
    message: "every recipient is suppressed by the project (see /v1/suppressions)",
  },
  quota: { code: "quota_exceeded", message: "the project's sending quota is exceeded" },
  size: { code: "message_too_large", message: "the message is larger than MAX_MESSAGE_SIZE" },
  bare_lf: {
    code: "invalid_line_endings",
    message: "a bare CR, or a line of one dot next to a bare LF: lines must end with CRLF",
  },
  header_from: {
    code: "sender_not_allowed",
    message: "the From header needs an address of one of the project's sender domains",
  },
  header_from_multiple: {
    code: "invalid_message",
    message: "the message has more than one From header (RFC 5322 3.6)",
  },
  header_from_unverified: {
    code: "domain_not_verified",
    message: "the From header's domain is not a verified domain of the project (see /v1/domains)",
  },
  content_unstorable: {
    code: "invalid_message",
    message: "the message content cannot be stored",
  },
  // Forbidden, as a sender domain not allowed is: the project's own policy refuses the message.
  rule: { code: "rule_denied", message: "refused by a rule of the project" },
  rules_unreadable: {
    code: "invalid_message",
    message: "the message is too complex to check against the project's rules",
  },
  store_unavailable: {
    code: "store_unavailable",
    message: "the message store is unavailable, try again later",
  },
  invalid_message: { code: "invalid_message", message: "the message is invalid" },
  unsupported_media_type: {
    code: "unsupported_media_type",
    message: "send application/json or message/rfc822",
  },
  idempotency_key_reused: {
    code: "idempotency_key_reused",
    message: "this Idempotency-Key was used within 24 h for a different request",
  },
};

/** A refusal: an API error that keeps its reason (and what the audit event should say). */
class SubmissionRefused extends ApiError {
  constructor(
    readonly reason: SubmissionRefusal,
    detail?: string,
    readonly details: Record<string, string | number> = {},
  ) {
    const refusal = submissionRefusals[reason];
    super(refusal.code, detail ? `${refusal.message}: ${detail}` : refusal.message);
  }
}

function refused(reason: SubmissionRefusal, detail?: string, details?: Record<string, string | number>) {
  return new SubmissionRefused(reason, detail, details);
}

const address = z.string().min(1).max(254);
const addresses = z
  .union([address, z.array(address)])
  .transform((value) => (Array.isArray(value) ? value : [value]));

/** Header fields a caller may not set: the composer writes them from the other fields. */
const composedHeaders = new Set([
  "from",
  "to",
  "cc",
  "bcc",
  "subject",
  "content-type",
  "content-transfer-encoding",
  "mime-version",
]);

const jsonSubmission = z.strictObject({
  from: address,
  to: addresses,
  cc: addresses.optional(),
  bcc: addresses.optional(),
  subject: z.string().max(998),
  text: z.string().optional(),
  html: z.string().optional(),
  headers: z
    .record(
      z
        .string()
        .regex(/^[!-9;-~]+$/, "must be a header field name")
        .refine((name) => !composedHeaders.has(name.toLowerCase()), "is set from the other fields"),
      z.string().regex(/^[^\r\n]*$/, "must be one line"),
    )
    .optional(),
  attachments: z
    .array(
      z.strictObject({
        filename: z.string().min(1).max(255),
        contentType: z.string().regex(/^[\w.+-]+\/[\w.+-]+$/, "must be a MIME type"),
        content: z.base64({ error: "must be base64" }),
      }),
    )
    .optional(),
});
type JsonSubmission = z.infer<typeof jsonSubmission>;

const rawEnvelope = z.object({
  from: z.string().max(254),
  to: addresses,
});

export const idempotencyKeyHeader = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[\x21-\x7e]+$/, "must be printable ASCII")
  .optional();

interface Envelope {
  mailFrom: string;
  recipients: string[];
}

export interface SubmissionDeps extends RouteDependencies {
  acceptor: Acceptor;
  /** The sending policy of the project submitted to, remembered across requests. */
  projectPolicies: Pick<ApiTokenVerifier, "projectPolicy">;
  /** Messages being stored by this process under an idempotency key's id: id → its answer. */
  storing: Map<string, Promise<string>>;
  quota: ProjectQuota;
  sql: Pick<SqlPool, "query">;
  rules: RulesCache;
  suppressions: SuppressionBook;
}

/**
 * `POST /messages` of the project API; registered under `/admin/projects/:projectId` too (see
 * admin-messages.ts), where the operator acts for the project named in the path.
 */
export function submissionRoutes(deps: SubmissionDeps): FastifyPluginAsyncZod {
  const maxSize = deps.config.smtp.maxMessageSize;
  return async (app) => {
    // Raw bytes as a Buffer; the size is judged in the handler, against the message alone.
    app.addContentTypeParser("message/rfc822", { parseAs: "buffer" }, (_request, body, done) =>
      done(null, body),
    );
    // A body over the route's limit is a message too large, with the refusal's own code.
    // Invalid input is 422 here (CONTRACT §7), whether the JSON, a header or the query is wrong.
    app.setErrorHandler((error: FastifyError) => {
      if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") throw refused("size");
      if (error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") throw refused("unsupported_media_type");
      if (error.code === "FST_ERR_CTP_INVALID_JSON_BODY" || error.code === "FST_ERR_CTP_EMPTY_JSON_BODY")
        throw refused("invalid_message", error.message);
      if (hasZodFastifySchemaValidationErrors(error)) {
        const issue = error.validation[0];
        const field = [error.validationContext, ...(issue?.instancePath.split("/").filter(Boolean) ?? [])];
        throw refused("invalid_message", `${field.join(".")}: ${issue?.message ?? "invalid"}`);
      }
      throw error;
    });

    app.post(
      "/messages",
      {
        // Base64 makes attachments 4/3 larger in JSON; the decoded size is checked below.
        bodyLimit: Math.ceil(maxSize / 3) * 4 + 1024 * 1024,
        schema: {
          tags: ["project"],
          summary:
            "Submit a message: JSON to be composed, or raw message/rfc822 with the envelope in the query",
          description:
            "Answers 202 once the message is durably stored, as SMTP's 250. The body is either " +
            "application/json (from, to, cc, bcc, subject, text, html, headers, attachments with base64 " +
            "content) or message/rfc822 bytes with ?from=&to=&to=. An Idempotency-Key header makes a " +
            "retry within 24 h answer the first message's id without storing another; so does a " +
            "resubmission within the project's dedupWindowSeconds, without a key. Recipients on the " +
            "project's suppressions are left out (a message.suppressed event names them); every " +
            "recipient suppressed: 422 recipients_suppressed.",
          security: [{ bearer: [] }],
          headers: z.object({ "idempotency-key": idempotencyKeyHeader }),
          querystring: z.object({ from: z.string().optional(), to: addresses.optional() }),
          response: {
            202: z.object({ id: z.string() }),
            ...errorResponses(...projectRouteErrors, ...Object.values(submissionRefusals).map((r) => r.code)),
          },
        },
      },
      async (request, reply) => {
        const idempotencyKey = request.headers["idempotency-key"];
        const submitter = { projectId: request.project.id, actor: request.project.actor };
        try {
          const id = await receive(submitter, idempotencyKey, request, reply);
          return reply.status(202).send({ id });
        } catch (error) {
          // Audited as SMTP audits its refusals (/v1/stats counts them by reason); a reused
          // idempotency key refuses a request, not a message.
          if (error instanceof SubmissionRefused && error.reason !== "idempotency_key_reused")
            await auditRefusal(deps, request, submitter, error);
          throw error;
        }
      },
    );

    async function receive(
      submitter: { projectId: string; actor: string },
      idempotencyKey: string | undefined,
      request: FastifyRequest,
      reply: FastifyReply,
    ): Promise<string> {
      const project = await projectPolicy(deps, submitter.projectId);
      if (project.status === "suspended") throw refused("suspended");
      let submission: Pick<Submission, "envelope" | "content" | "requestSha256" | "fingerprint">;
      // Duplicate suppression (docs/rules.md): raw bytes are fingerprinted as SMTP's, by the reader;
      // a JSON request by itself, as composing it again gives another Message-ID and Date.
      const dedup = project.dedupWindowSeconds > 0;
      if (Buffer.isBuffer(request.body)) {
        const envelope = rawEnvelope.safeParse(request.query);
        if (!envelope.success) throw refused("invalid_message", `query: ${describe(envelope.error)}`);
        if (request.body.length > maxSize) throw refused("size", `${request.body.length} bytes`);
        const parsed = { mailFrom: envelope.data.from, recipients: envelope.data.to };
        const checked = checkEnvelope(project, parsed);
        submission = {
          envelope: checked,
          content: request.body,
          requestSha256: () => sha256("raw", JSON.stringify(parsed), request.body as Buffer),
          fingerprint: dedup ? { hash: startFingerprint(checked, "message"), addContent: true } : undefined,
        };
      } else {
        // Fastify also parses text/plain (as a string): only JSON is composed.
        if (!/^application\/json\b/i.test(request.headers["content-type"] ?? ""))
          throw refused("unsupported_media_type");
        const body = jsonSubmission.safeParse(request.body);
        if (!body.success) throw refused("invalid_message", describe(body.error));
        const envelope = checkEnvelope(project, {
          mailFrom: mailboxOf(body.data.from),
          recipients: [...body.data.to, ...(body.data.cc ?? []), ...(body.data.bcc ?? [])].map(mailboxOf),
        });
        const json = () => JSON.stringify(body.data);
        submission = {
          envelope,
          content: await compose(body.data, maxSize),
          requestSha256: () => sha256("json", json()),
          fingerprint: dedup
            ? { hash: startFingerprint(envelope, "json").update(json()), addContent: false }
            : undefined,
        };
      }
      return submit(deps, request, reply, project, {
        ...submission,
        idempotencyKey,
        actor: submitter.actor,
      });
    }
  };
}

async function auditRefusal(
  deps: SubmissionDeps,
  request: FastifyRequest,
  submitter: { projectId: string; actor: string },
  refusal: SubmissionRefused,
): Promise<void> {
  const entry = { actor: submitter.actor, projectId: submitter.projectId, ip: request.ip };
  try {
    if (refusal.reason === "quota")
      await recordAudit(deps.db, { ...entry, action: "quota.exceeded", details: refusal.details });
    await recordAudit(deps.db, {
      ...entry,
      action: "message.rejected",
      details: { reason: refusal.reason, via: "http", ...refusal.details },
    });
  } catch (error) {
    request.log.warn({ err: error }, "could not audit a refused submission");
  }
}

async function projectPolicy(deps: SubmissionDeps, projectId: string): Promise<ProjectPolicy> {
  const lookup = await deps.projectPolicies.projectPolicy(projectId);
  if (lookup.ok) return lookup.value;
  if (lookup.reason === "unknown_project") throw new ApiError("not_found", `no project ${projectId}`);
  throw refused("store_unavailable");
}

/** SMTP's MAIL FROM and RCPT TO checks; repeated recipients are one delivery, as in SMTP. */
function checkEnvelope(project: ProjectPolicy, envelope: Envelope): Envelope {
  if (!isMailbox(envelope.mailFrom)) throw refused("sender_syntax", envelope.mailFrom);
  if (!senderDomainAllowed(project, envelope.mailFrom))
    throw refused("sender_domain", envelope.mailFrom, { mailFrom: envelope.mailFrom });
  const recipients = new Map<string, string>();
  for (const recipient of envelope.recipients) {
    if (!isMailbox(recipient)) throw refused("recipient_syntax", recipient);
    if (!recipients.has(recipient.toLowerCase())) recipients.set(recipient.toLowerCase(), recipient);
  }
  if (recipients.size === 0) throw refused("invalid_message", "at least one recipient is needed");
  if (recipients.size > project.maxRecipients)
    throw refused(
      "too_many_recipients",
      `${recipients.size} recipients, the limit is ${project.maxRecipients}`,
    );
  return { mailFrom: envelope.mailFrom, recipients: [...recipients.values()] };
}

/**
 * The address of a JSON address field, which may carry a display name (`App <app@example.com>`),
 * as the composer reads it; the field as it is when it holds no single address (then refused).
 */
function mailboxOf(field: string): string {
  const parsed = addressparser(field, { flatten: true });
  return parsed.length === 1 && parsed[0]?.address ? parsed[0].address : field;
}

/** The JSON submission as MIME. Bcc is envelope only: MailComposer leaves it out of the header. */
async function compose(body: JsonSubmission, maxSize: number): Promise<Buffer> {
  const attachments = (body.attachments ?? []).map((a) => ({
    filename: a.filename,
    contentType: a.contentType,
    content: Buffer.from(a.content, "base64"),
  }));
  const decoded =
    Buffer.byteLength(body.text ?? "") +
    Buffer.byteLength(body.html ?? "") +
    attachments.reduce((sum, a) => sum + a.content.length, 0);
  if (decoded > maxSize) throw refused("size", `${decoded} bytes of text and attachments`);
  try {
    return await new MailComposer({
      from: body.from,
      to: body.to,
      cc: body.cc,
      subject: body.subject,
      text: body.text,
      html: body.html,
      headers: body.headers,
      attachments,
    })
      .compile()
      .build();
  } catch (error) {
    throw refused("invalid_message", (error as Error).message);
  }
}

type Submission = {
  envelope: Envelope;
  content: Buffer;
  /** What an idempotency key is checked against; computed only when a key is sent. */
  requestSha256: () => string;
  /** Duplicate suppression's hash, envelope in; `addContent`: the message bytes are still to go in. */
  fingerprint: { hash: Hash; addContent: boolean } | undefined;
  idempotencyKey: string | undefined;
  actor: string;
};

/**
 * Answers the stored message's id. With an idempotency key, a key used for this request answers
 * its message's id (see idempotency.ts for why a key can never yield two messages).
 */
async function submit(
  deps: SubmissionDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  project: ProjectPolicy,
  submission: Submission,
): Promise<string> {
  if (submission.idempotencyKey === undefined)
    return store(deps, request, reply, project, submission, uuidv7());
  const claim = await claimIdempotencyKey(deps.sql, {
    projectId: project.id,
    key: submission.idempotencyKey,
    requestSha256: submission.requestSha256(),
    messageId: uuidv7(),
  }).catch(() => {
    throw refused("store_unavailable");
  });
  if (claim.state === "reused") throw refused("idempotency_key_reused");
  const id = claim.messageId;
  if (claim.state === "replay" && (await stored(deps, project.id, id))) return id;
  // A request of this process storing the id: wait for it rather than hand the acceptor the same
  // id twice (in one batch, one delivery job would name it twice). Its failure leaves the store
  // to this request. Checked again after each wait, and the attempt registered without a wait in
  // between, so one request of this process at a time stores an id.
  for (let pending = deps.storing.get(id); pending; pending = deps.storing.get(id)) {
    if (await succeeded(pending)) return id;
  }
  const attempt = store(deps, request, reply, project, submission, id);
  deps.storing.set(id, attempt);
  void succeeded(attempt).then(() => deps.storing.delete(id));
  return attempt;
}

const succeeded = (work: Promise<unknown>) =>
  work.then(
    () => true,
    () => false,
  );

/** The checks on the message itself, the quota, then the store, under `id`. */
async function store(
  deps: SubmissionDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  project: ProjectPolicy,
  submission: Submission,
  id: string,
): Promise<string> {
  const { content, idempotencyKey, fingerprint } = submission;
  const { envelope, suppressed } = await withoutSuppressed(deps, request, project, submission.envelope);
  const trace = httpReceivedHeader({
    clientIp: request.ip,
    hostname: deps.config.smtp.hostname,
    projectId: project.id,
    messageId: id,
    recipients: envelope.recipients,
    at: new Date(),
  });
  const rules = await deps.rules.rulesOf(project.id).catch((error: Error) => {
    request.log.error({ err: error }, "project rules unavailable");
    throw refused("store_unavailable");
  });
  // As over SMTP, the MIME tree is read only for a project whose rules look at content.
  const inspector = rules.needsContent ? inspectContent(rules) : undefined;
  // SMTP's reader: the same line-ending rules (SMTP_BARE_NEWLINE), the trace header in front.
  const data = await readMessageData(
    Readable.from([content]),
    Buffer.from(trace, "utf8"),
    { take: () => undefined, release: () => {} },
    deps.config.smtp.bareNewline,
    observeContent(fingerprint?.addContent ? fingerprint.hash : undefined, inspector),
  );
  if (!data.ok) throw refused(data.reason);
  const headers = summariseHeaders(data.bytes);
  const headerFrom = checkHeaderFrom(project, headers);
  if (headerFrom)
    throw refused(headerFrom.reason, "headerFrom" in headerFrom ? headerFrom.headerFrom : undefined);
  // One answer for the request: a rule denying any recipient refuses the message (SMTP refuses
  // that recipient alone at RCPT).
  let initialStatus: "queued" | "held" = "queued";
  if (!rules.empty) {
    const reading = inspector ? await inspector.finish() : undefined;
    if (reading && !reading.ok) throw refused("rules_unreadable", reading.error.message);
    const verdict = rules.judgeMessage(envelope.mailFrom, envelope.recipients, reading?.facts);
    if (verdict.action === "deny") throw refused("rule", `rule "${verdict.rule}"`, { rule: verdict.rule });
    if (verdict.action === "hold") initialStatus = "held";
  }

  const reservation = await deps.quota.reserve(project, envelope.recipients.length);
  if (!reservation.ok) {
    if (reservation.reason === "unavailable") {
      request.log.error({ err: reservation.error }, "quota unavailable");
      throw refused("store_unavailable");
    }
    const seconds = Math.max(1, Math.ceil(reservation.msBeforeNext / 1000));
    reply.header("Retry-After", seconds);
    const window = reservation.window === "perMinute" ? "per-minute" : "daily";
    throw refused("quota", `${window} limit of ${reservation.limit} recipients, retry in ${seconds} s`, {
      window: reservation.window,
      limit: reservation.limit,
      retryAfterSeconds: seconds,
    });
  }
  const outcome = await deps.acceptor.accept({
    id,
    client: { project, actor: submission.actor },
    ip: request.ip,
    mailFrom: envelope.mailFrom,
    recipients: envelope.recipients,
    bytes: data.bytes,
    headers,
    duplicates: fingerprint && {
      fingerprint: fingerprint.hash.digest("hex"),
      windowSeconds: project.dedupWindowSeconds,
    },
    initialStatus,
    suppressed,
  });
  if (outcome.ok && outcome.value.duplicateOf !== undefined) {
    // Stored nothing: the first message's 202 stands for this one.
    deps.quota
      .refund(project, envelope.recipients.length)
      .catch((error: Error) => request.log.warn({ err: error }, "quota refund failed"));
    return outcome.value.duplicateOf;
  }
  if (outcome.ok) return id;
  deps.quota
    .refund(project, envelope.recipients.length)
    .catch((error: Error) => request.log.warn({ err: error }, "quota refund failed"));
  // Another request with the same key stored this id first (the primary key refused ours).
  if (idempotencyKey !== undefined && (await stored(deps, project.id, id))) return id;
  request.log.error({ err: outcome.error }, "message could not be stored");
  throw refused(outcome.reason);
}

/**
 * As Postmark and SES do: the message goes to the recipients that are not suppressed, and those
 * that are get a `message.suppressed` event (written with the message); the answer is the
 * message's 202 as usual. Every recipient suppressed: refused, nothing stored (`422
 * recipients_suppressed`, audited as SMTP's RCPT refusals are).
 */
async function withoutSuppressed(
  deps: SubmissionDeps,
  request: FastifyRequest,
  project: ProjectPolicy,
  envelope: Envelope,
): Promise<{ envelope: Envelope; suppressed: SuppressedRecipient[] }> {
  const verdicts = await Promise.all(
    envelope.recipients.map((recipient) =>
      deps.suppressions.verdictFor(project.id, project.suppressionsVersion, recipient),
    ),
  ).catch((error: Error) => {
    request.log.error({ err: error }, "suppressions unavailable");
    throw refused("store_unavailable");
  });
  const suppressed = envelope.recipients.flatMap((address, i) => {
    const verdict = verdicts[i];
    return verdict ? [{ address, suppression: verdict.address, reason: verdict.reason }] : [];
  });
  if (suppressed.length === 0) return { envelope, suppressed };
  const recipients = envelope.recipients.filter((_, i) => !verdicts[i]);
  if (recipients.length === 0)
    throw refused("suppressed", suppressed.map((s) => `${s.address} (${s.reason})`).join(", "), {
      recipient: suppressed[0]?.address ?? "",
      suppressionReason: suppressed[0]?.reason ?? "",
    });
  return { envelope: { ...envelope, recipients }, suppressed };
}

async function stored(deps: SubmissionDeps, projectId: string, id: string): Promise<boolean> {
  return messageStored(deps.sql, projectId, id).catch(() => {
    throw refused("store_unavailable");
  });
}

function sha256(...parts: (string | Buffer)[]): string {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part).update("\0");
  return hash.digest("hex");
}

/** A zod error as one line naming the field. */
function describe(error: z.ZodError): string {
  const issue = error.issues[0];
  const field = issue?.path.join(".") || "body";
  return `${field}: ${issue?.message ?? "invalid"}`;
}
