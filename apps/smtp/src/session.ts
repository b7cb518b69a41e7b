import type { AuthenticatedClient, CredentialVerifier } from "@postern/auth";
import { auditableUsername } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { uuidv7 } from "@postern/db";
import { startFingerprint } from "@postern/messages";
import { type RouteBook, routeFor, type SuppressionBook, type SuppressionVerdict } from "@postern/projects";
import type { ProjectQuota } from "@postern/quota";
import { type CompiledRules, inspectContent, type RulesCache } from "@postern/rules";
import type { Logger } from "@postern/telemetry";
import type {
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerDataStream,
  SMTPServerOptions,
  SMTPServerSession,
} from "smtp-server";
import type { Acceptor } from "./accept";
import type { AuditBuffer } from "./audit-buffer";
import type { DataBudget } from "./data-budget";
import type { InflowControl } from "./inflow";
import {
  isAscii,
  isMailbox,
  observeContent,
  type ReceivedData,
  readMessageData,
  receivedHeader,
  summariseHeaders,
} from "./message";
import type { SmtpMetrics } from "./metrics";
import {
  accepted,
  authFailures,
  type RejectionReason,
  rejections,
  replies,
  type SmtpReply,
  smtpError,
} from "./replies";
import { checkHeaderFrom, senderDomainAllowed } from "./sender-policy";

export interface SessionDeps {
  config: ResolvedConfig;
  log: Logger;
  verifier: CredentialVerifier;
  quota: ProjectQuota;
  acceptor: Acceptor;
  audit: AuditBuffer;
  metrics: SmtpMetrics;
  inflow: InflowControl;
  dataBudget: DataBudget;
  rules: RulesCache;
  /** The projects' routes, by the version the project policy carries: a `reject` route refuses at RCPT. */
  routes: RouteBook;
  /** The projects' suppressions, by the version the project policy carries: refused at RCPT. */
  suppressions: SuppressionBook;
}

/** What Postern keeps per SMTP connection, beside smtp-server's own session. */
interface SessionState {
  log: Logger;
  ip: string;
  /** Recipients counted against the quota in the open transaction (refunded unless it ends in 250). */
  reserved: { project: AuthenticatedClient["project"]; recipients: number } | undefined;
  /** Rejection reasons already audited in this transaction (one event per reason, not per RCPT). */
  audited: Set<RejectionReason>;
  /** The project's rules as read at MAIL: the whole transaction is judged by one version. */
  rules: CompiledRules | undefined;
}

type Callback = (error?: Error | null) => void;

/**
 * smtp-server's handlers: the policy of an SMTP session, in the order a client meets it. Every
 * reply comes from the table in replies.ts; every refusal is counted, logged and audited here.
 */
export function createSessionHandlers(deps: SessionDeps) {
  const { config, verifier, quota, audit, metrics, inflow } = deps;
  const states = new Map<string, SessionState>();
  /** Sessions inside DATA (reading or storing): graceful shutdown waits for them. */
  const inData = new Set<string>();

  const stateOf = (session: SMTPServerSession): SessionState => {
    let state = states.get(session.id);
    if (!state) {
      state = {
        log: deps.log.child({ session: session.id, ip: session.remoteAddress }),
        ip: session.remoteAddress,
        reserved: undefined,
        audited: new Set(),
        rules: undefined,
      };
      states.set(session.id, state);
    }
    return state;
  };

  const clientOf = (session: SMTPServerSession) => session.user as AuthenticatedClient;

  /**
   * The pattern of the project's route for `recipient` when that route is `reject`: that recipient
   * alone is refused, before it counts against the quota. Read by the routes version the project
   * policy carries (refreshed at each MAIL), so a change applies from the next transaction.
   */
  const rejectingRoute = async (client: AuthenticatedClient, recipient: string) => {
    const routes = await deps.routes.routesOf(client.project.id, client.project.routesVersion);
    const route = routeFor(routes, recipient);
    return route?.target.type === "reject" ? route.match : undefined;
  };

  const envelopeOf = (session: SMTPServerSession) => ({
    mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
    recipients: session.envelope.rcptTo.map((r) => r.address),
  });

  /** Counts, logs and audits a refusal; returns the error smtp-server replies with. */
  const reject = (
    session: SMTPServerSession,
    reason: RejectionReason,
    extra: { reply?: SmtpReply; detail?: string; details?: Record<string, string | number | null> } = {},
  ) => {
    const state = stateOf(session);
    const client = session.user as AuthenticatedClient | undefined;
    metrics.rejected.inc({ reason });
    state.log.info({ reason, ...extra.details }, "refused");
    if (!state.audited.has(reason)) {
      state.audited.add(reason);
      audit.record({
        action: "message.rejected",
        actor: client ? `smtp:${client.key}` : "smtp",
        projectId: client?.project.id ?? null,
        ip: state.ip,
        details: { reason, ...envelopeOf(session), ...extra.details },
      });
    }
    return smtpError(extra.reply ?? rejections[reason], extra.detail);
  };

  const refund = (state: SessionState) => {
    const reserved = state.reserved;
    state.reserved = undefined;
    if (!reserved || reserved.recipients === 0) return;
    quota
      .refund(reserved.project, reserved.recipients)
      .catch((error: Error) => state.log.warn({ err: error }, "quota refund failed"));
  };

  const handlers = {
    // The connection limits are held at TCP accept, before TLS (connection-gate.ts).
    onConnect(session: SMTPServerSession, callback: Callback) {
      stateOf(session);
      metrics.sessions.inc({ listener: session.localPort.toString(), outcome: "opened" });
      metrics.sessionsActive.inc();
      callback();
    },

    onAuth(
      auth: SMTPServerAuthentication,
      session: SMTPServerSession,
      callback: (error: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
    ) {
      const state = stateOf(session);
      // smtp-server answers 538 before TLS; this guards against a configuration that would not.
      if (!session.secure) return callback(smtpError(replies.authBeforeTls));
      const key = auth.username ?? "";
      const secret = auth.password ?? "";
      // The username is the client's text: a secret in the wrong field, `key:secret`, a base64
      // blob. Only a value shaped exactly like an API key is logged or audited as it is.
      const shownKey = auditableUsername(key);
      verifier.verify(key, secret, state.ip).then((outcome) => {
        if (outcome.ok) {
          const { client, cached } = outcome.value;
          metrics.auth.inc({ outcome: cached ? "success_cached" : "success_bcrypt" });
          state.log.info({ key: client.key, projectId: client.project.id, cached }, "authenticated");
          audit.record({
            action: "auth.success",
            actor: `smtp:${client.key}`,
            projectId: client.project.id,
            ip: state.ip,
            details: { credentialId: client.credentialId, method: auth.method },
          });
          return callback(null, { user: client });
        }
        metrics.auth.inc({ outcome: outcome.reason });
        const failure = authFailures[outcome.reason];
        const projectId = "projectId" in outcome ? (outcome.projectId ?? null) : null;
        const details = { reason: outcome.reason, username: shownKey, method: auth.method };
        if (outcome.reason === "blocked") {
          const retryAfterSeconds = Math.ceil(outcome.msBeforeNext / 1000);
          // The attempt that spent the allowance is itself a failure worth its own event.
          if (outcome.reachedNow) {
            state.log.info({ key: shownKey, reason: outcome.reason }, "authentication failed");
            audit.record({ action: "auth.failure", actor: "smtp", projectId, ip: state.ip, details });
          }
          // A blocked client may hammer: one event and one log line per block and process, the
          // refused attempts counted into the event (details.attempts).
          const subject =
            outcome.scope === "ip" ? `ip ${outcome.address}` : `key ${outcome.address} ${key.slice(0, 256)}`;
          const first = audit.recordOncePerWindow(subject, Date.now() + outcome.msBeforeNext, {
            action: "auth.blocked",
            actor: "smtp",
            projectId,
            ip: state.ip,
            details: { ...details, scope: outcome.scope, address: outcome.address, retryAfterSeconds },
          });
          if (first)
            state.log.warn(
              { key: shownKey, scope: outcome.scope, address: outcome.address, retryAfterSeconds },
              "authentication blocked: further attempts refused until the window ends",
            );
          return callback(smtpError(failure.reply, `try again in ${retryAfterSeconds} s`));
        }
        if (outcome.reason === "unavailable") {
          state.log.error({ err: outcome.error, key: shownKey }, "credential verification unavailable");
        } else {
          state.log.info({ key: shownKey, reason: outcome.reason }, "authentication failed");
        }
        if (failure.audit)
          audit.record({ action: failure.audit, actor: "smtp", projectId, ip: state.ip, details });
        callback(smtpError(failure.reply));
      });
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      const state = stateOf(session);
      // A transaction abandoned with RSET (or a new EHLO) gives its recipients back.
      refund(state);
      state.audited.clear();
      state.rules = undefined;
      const client = clientOf(session);
      Promise.all([
        verifier.standing(client),
        deps.rules.rulesOf(client.project.id).then(
          (rules) => rules,
          (error: Error) => error,
        ),
      ]).then(([standing, rules]) => {
        if (!standing.ok) {
          if (standing.reason === "unavailable") {
            state.log.error({ err: standing.error }, "credential check unavailable");
            return callback(reject(session, "store_unavailable"));
          }
          return callback(reject(session, standing.reason === "suspended" ? "suspended" : "revoked"));
        }
        if (rules instanceof Error) {
          state.log.error({ err: rules }, "project rules unavailable");
          return callback(reject(session, "store_unavailable"));
        }
        state.rules = rules;
        // Fresh policy (sender domains, limits) for this transaction.
        const client = standing.value;
        session.user = client;
        const sender = address.address;
        const details = { mailFrom: sender };
        if (!isAscii(sender) && !session.envelope.smtpUtf8)
          return callback(reject(session, "smtputf8_required", { details }));
        if (sender !== "" && !isMailbox(sender))
          return callback(reject(session, "sender_syntax", { details }));
        if (!senderDomainAllowed(client.project, sender))
          return callback(reject(session, "sender_domain", { details }));
        // In-flow control: while the project's deliveries lag behind, the 250 waits (the client
        // keeps its message meanwhile). After the refusals above, so that a refused MAIL is
        // answered at once.
        inflow.hold(client.project.id).then(() => callback());
      });
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) {
      const state = stateOf(session);
      const client = clientOf(session);
      const recipient = address.address;
      const details = { recipient };
      if (!isAscii(recipient) && !session.envelope.smtpUtf8)
        return callback(reject(session, "smtputf8_required", { details }));
      if (!isMailbox(recipient)) return callback(reject(session, "recipient_syntax", { details }));
      const known = session.envelope.rcptTo.some((r) => r.address.toLowerCase() === recipient.toLowerCase());
      // A repeated recipient is one delivery (smtp-server keeps one entry): nothing more to count.
      if (known) return callback();
      Promise.all([
        rejectingRoute(client, recipient),
        deps.suppressions.verdictFor(client.project.id, client.project.suppressionsVersion, recipient),
      ]).then(
        ([route, suppression]) => {
          if (route)
            return callback(
              reject(session, "route_reject", { detail: route, details: { ...details, route } }),
            );
          // That recipient alone, before it counts against the quota; the others go on. Each one
          // is audited: the project's record of who was not mailed.
          if (suppression) {
            state.audited.delete("suppressed");
            return callback(
              reject(session, "suppressed", {
                detail: suppressionDetail(suppression),
                details: {
                  ...details,
                  suppression: suppression.address,
                  suppressionReason: suppression.reason,
                },
              }),
            );
          }
          if (session.envelope.rcptTo.length >= client.project.maxRecipients)
            return callback(
              reject(session, "too_many_recipients", {
                details: { ...details, limit: client.project.maxRecipients },
              }),
            );
          // Envelope rules: a recipient denied is refused alone, the others of the message go on.
          const verdict =
            state.rules?.empty === false
              ? state.rules.judgeRecipient(mailFromOf(session), recipient)
              : undefined;
          if (verdict !== undefined && verdict !== "after_data" && verdict.action === "deny")
            return callback(
              reject(session, "rule", {
                detail: `rule "${verdict.rule}"`,
                details: { ...details, rule: verdict.rule },
              }),
            );
          quota.reserve(client.project, 1).then((reservation) => {
            if (reservation.ok) {
              state.reserved = {
                project: client.project,
                recipients: (state.reserved?.recipients ?? 0) + 1,
              };
              return callback();
            }
            if (reservation.reason === "unavailable") {
              state.log.error({ err: reservation.error }, "quota unavailable");
              return callback(reject(session, "store_unavailable", { details }));
            }
            const seconds = Math.ceil(reservation.msBeforeNext / 1000);
            const window = reservation.window === "perMinute" ? "per-minute" : "daily";
            if (!state.audited.has("quota"))
              audit.record({
                action: "quota.exceeded",
                actor: `smtp:${client.key}`,
                projectId: client.project.id,
                ip: state.ip,
                details: { window: reservation.window, limit: reservation.limit, retryAfterSeconds: seconds },
              });
            callback(
              reject(session, "quota", {
                detail: `${window} limit of ${reservation.limit} recipients, retry in ${seconds} s`,
                details: { ...details, window: reservation.window, limit: reservation.limit },
              }),
            );
          });
        },
        (error: Error) => {
          state.log.error({ err: error }, "routes or suppressions unavailable");
          callback(reject(session, "store_unavailable", { details }));
        },
      );
    },

    onData(
      stream: SMTPServerDataStream,
      session: SMTPServerSession,
      callback: (error: Error | null, message?: string) => void,
    ) {
      const state = stateOf(session);
      inData.add(session.id);
      // Held from the first byte read until the store has answered.
      const held = deps.dataBudget.holder();
      let received: ReceivedData | undefined;
      // Announced from the start of DATA: a batch written meanwhile may wait for this message.
      const expected = deps.acceptor.expect();
      const startedAt = process.hrtime.bigint();
      receive()
        .then(
          (reply) => {
            if (typeof reply === "string") {
              // The recipients are now spent: the message is stored (or, a duplicate, refunded).
              state.reserved = undefined;
              metrics.acceptSeconds.observe(Number(process.hrtime.bigint() - startedAt) / 1e9);
              callback(null, reply);
            } else {
              refund(state);
              callback(reply);
            }
          },
          (error: Error) => {
            refund(state);
            // The connection ended before the final dot (the client left, or SMTP_DATA_DEADLINE
            // passed): nobody is left to answer, and nothing failed here.
            if (endedInData(error)) {
              state.log.info({ reason: error.message }, "connection ended during DATA, nothing stored");
              return callback(error);
            }
            state.log.error({ err: error }, "DATA failed");
            callback(reject(session, "store_unavailable"));
          },
        )
        .finally(() => {
          // Stored or refused: its bytes are read no more.
          if (received?.ok) received.release();
          held.release();
          expected.cancel();
          inData.delete(session.id);
        });

      async function receive(): Promise<string | Error> {
        const client = clientOf(session);
        const { mailFrom, recipients } = envelopeOf(session);
        const id = uuidv7();
        // Stamped when DATA starts, as Postfix's smtpd does, so the message is assembled behind it
        // in one copy.
        const trace = receivedHeader({
          helo: session.hostNameAppearsAs || "",
          clientHostname: session.clientHostname,
          clientIp: session.remoteAddress,
          hostname: config.smtp.hostname,
          tls: session.secure,
          projectId: client.project.id,
          messageId: id,
          recipients,
          at: new Date(),
          smtpUtf8: session.envelope.smtpUtf8 === true,
        });
        const windowSeconds = client.project.dedupWindowSeconds;
        const fingerprint =
          windowSeconds > 0
            ? startFingerprint({ mailFrom: mailFrom ?? "", recipients }, "message")
            : undefined;
        const rules = state.rules;
        // The MIME tree is read only for a project whose rules look at content.
        const inspector = rules?.needsContent ? inspectContent(rules) : undefined;
        const data = await readMessageData(
          stream,
          Buffer.from(trace, "utf8"),
          held,
          config.smtp.bareNewline,
          observeContent(fingerprint, inspector),
        );
        received = data;
        if (!data.ok) return reject(session, data.reason, { details: { size: data.bytesRead } });
        const bytes = data.bytes;
        const headers = summariseHeaders(bytes);
        const headerFrom = checkHeaderFrom(client.project, headers);
        if (headerFrom?.reason === "header_from_multiple")
          return reject(session, "header_from_multiple", { details: { fromFields: headerFrom.fromFields } });
        if (headerFrom && "missing" in headerFrom)
          return reject(session, "header_from", { reply: replies.headerFromMissing });
        if (headerFrom)
          return reject(session, headerFrom.reason, { details: { headerFrom: headerFrom.headerFrom } });
        let initialStatus: "queued" | "held" = "queued";
        if (rules && !rules.empty) {
          const reading = inspector ? await inspector.finish() : undefined;
          if (reading && !reading.ok)
            return reject(session, "rules_unreadable", { details: { problem: reading.error.message } });
          const verdict = rules.judgeMessage(mailFrom ?? "", recipients, reading?.facts);
          if (verdict.action === "deny") {
            // The refused message is an event of its own, whatever recipients a rule refused at RCPT.
            state.audited.delete("rule");
            return reject(session, "rule", {
              detail: `rule "${verdict.rule}"`,
              details: { rule: verdict.rule },
            });
          }
          if (verdict.action === "hold") {
            initialStatus = "held";
            state.log.info({ messageId: id, rule: verdict.rule }, "held by a rule");
          }
        }
        const outcome = await expected.accept({
          id,
          client,
          ip: state.ip,
          mailFrom: mailFrom ?? "",
          recipients,
          bytes,
          headers,
          duplicates: fingerprint && { fingerprint: fingerprint.digest("hex"), windowSeconds },
          initialStatus,
        });
        if (!outcome.ok) {
          state.log.error({ err: outcome.error }, "message could not be stored");
          return reject(session, outcome.reason, { details: { size: bytes.length } });
        }
        if (outcome.value.duplicateOf !== undefined) {
          // Stored nothing: the first message's 250 stands for this one (docs/rules.md, Duplicates).
          refund(state);
          metrics.duplicates.inc();
          state.log.info(
            { messageId: outcome.value.duplicateOf, size: bytes.length },
            "duplicate, not stored",
          );
          return accepted(outcome.value.duplicateOf);
        }
        metrics.accepted.inc();
        state.log.info({ messageId: id, size: bytes.length, recipients: recipients.length }, "accepted");
        return accepted(id);
      }
    },

    onClose(session: SMTPServerSession) {
      const state = states.get(session.id);
      if (!state) return;
      refund(state);
      states.delete(session.id);
      metrics.sessionsActive.dec();
    },
  } satisfies Partial<SMTPServerOptions>;

  return { handlers, inData };
}

/** `hard_bounce`, or `hard_bounce of *@example.com` when the recipient's domain is what matched. */
function suppressionDetail(suppression: SuppressionVerdict): string {
  return suppression.address.startsWith("*@")
    ? `${suppression.reason} of ${suppression.address}`
    : suppression.reason;
}

/** MAIL FROM's address; the null sender `<>` is the empty string, as rules see it. */
function mailFromOf(session: SMTPServerSession): string {
  return session.envelope.mailFrom ? session.envelope.mailFrom.address : "";
}

/** The errors a DATA stream ends with when its connection closes before the final dot. */
function endedInData(error: Error & { code?: string }): boolean {
  return error.code === "ECONNECTION" || error.code === "ERR_STREAM_PREMATURE_CLOSE";
}
