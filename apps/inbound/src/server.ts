import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import type { ResolvedConfig } from "@postern/config";
import type { Database } from "@postern/db";
import { ensureDevCertificate } from "@postern/embedded";
import { findReportedMessage } from "@postern/messages";
import type { Redis } from "@postern/queue";
import { createConnectionGate, type SmtpReply, smtpError } from "@postern/smtp";
import { adaptSmtpServer, limitSessions } from "@postern/smtp/protocol";
import type { Logger, Registry } from "@postern/telemetry";
import { createReturnPaths } from "@postern/verp";
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from "smtp-server";
import { createInboundMetrics } from "./metrics";
import { type ReceiveOutcome, receiveReport } from "./receive";
import { inboundReplies as replies } from "./replies";

/**
 * The inbound role (docs/bounces.md): an SMTP server on INBOUND_PORT, the MX of BOUNCE_DOMAIN,
 * that takes the bounces and complaints sent back to VERP return paths. No AUTH: anyone on the
 * internet may report, but only to this installation's domain (no open relay), and only to a
 * return path it issued (a token whose MAC checks) or to its postmaster and abuse mailboxes
 * (RFC 5321 4.5.1, RFC 2142; a feedback loop is registered to one of them). STARTTLS is offered,
 * with SMTP_TLS_CERT or the generated certificate of the SMTP role (senders of bounces use TLS
 * opportunistically and do not verify it). The connection limits and the deadlines of the SMTP
 * role apply (SMTP_MAX_CONNECTIONS…, SMTP_DATA_DEADLINE, SMTP_HARD_ERROR_LIMIT), and reports are
 * at most INBOUND_MAX_MESSAGE_SIZE. A message is answered 250 only once what it reports is
 * stored (or, unmatched, audited); 451 when the store fails, so that the sender tries again.
 */
export interface InboundDeps {
  config: ResolvedConfig;
  db: Database;
  redis: Redis;
  log: Logger;
  metrics: Registry;
}

export interface RunningInbound {
  describe: string[];
  port: number;
  /** Stops listening, answers 421 to idle sessions, lets reports being stored finish. */
  stop(): Promise<void>;
}

/** Mailboxes of the bounce domain besides the return paths: feedback loops report to these. */
const roleMailboxes = new Set(["postmaster", "abuse"]);

export async function startInbound(
  deps: InboundDeps,
  overrides: { port?: number } = {},
): Promise<RunningInbound> {
  const { config } = deps;
  const domain = config.bounces.domain;
  if (!domain) throw new Error("BOUNCE_DOMAIN: the inbound role needs the domain whose mail it receives");
  adaptSmtpServer();
  const log = deps.log.child({ role: "inbound" });
  const metrics = createInboundMetrics(deps.metrics);
  const returnPaths = createReturnPaths({ encryptionKey: config.encryptionKey, bounceDomain: domain });
  const receiveDeps = {
    db: deps.db,
    returnPaths,
    suppressions: { db: deps.db, redis: deps.redis, config: { redisKeyPrefix: config.redisKeyPrefix } },
  };
  const certificateFiles =
    config.smtp.tlsCertFile && config.smtp.tlsKeyFile
      ? { certFile: config.smtp.tlsCertFile, keyFile: config.smtp.tlsKeyFile }
      : await ensureDevCertificate(config.dataDir, config.smtp.hostname);
  const [cert, key] = await Promise.all([
    readFile(certificateFiles.certFile),
    readFile(certificateFiles.keyFile),
  ]);
  /** Reports being read and stored: a stop waits for them. */
  const storing = new Set<Promise<unknown>>();
  /** Sessions between 354 and their reply: a stop lets them finish rather than cut them. */
  const inData = new Set<string>();

  const refuse = (reply: SmtpReply, reason: string) => {
    metrics.refused.inc({ reason });
    return smtpError(reply);
  };

  const onRcptTo = (
    address: SMTPServerAddress,
    session: SMTPServerSession,
    callback: (error?: Error | null) => void,
  ) => {
    const reading = returnPaths.read(address.address);
    if (!reading.ok) {
      if (reading.reason === "other_domain") return callback(refuse(replies.relayDenied, "other_domain"));
      if (reading.reason === "forged") return callback(refuse(replies.forgedReturnPath, "forged"));
      const local = address.address.slice(0, address.address.lastIndexOf("@")).toLowerCase();
      return callback(roleMailboxes.has(local) ? null : refuse(replies.noSuchMailbox, "no_mailbox"));
    }
    const earlier = session.envelope.rcptTo
      .map((r) => returnPaths.read(r.address))
      .find((r) => r.ok && r.messageId !== reading.messageId);
    if (earlier) return callback(smtpError(replies.oneReturnPath));
    // Authentic, but is the message still kept? (A project's deletion takes its messages.)
    findReportedMessage(deps.db, reading.messageId).then(
      (message) => callback(message ? null : refuse(replies.unknownMessage, "unknown_message")),
      (error: Error) => {
        log.warn({ err: error }, "message lookup failed");
        callback(smtpError(replies.storeUnavailable));
      },
    );
  };

  const onData = (
    stream: NodeJS.ReadableStream & { sizeExceeded?: boolean },
    session: SMTPServerSession,
    callback: (error?: Error | null, message?: string) => void,
  ) => {
    inData.add(session.id);
    const reply = (error: Error | null, message?: string) => {
      inData.delete(session.id);
      callback(error, message);
    };
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => {
      if (!stream.sizeExceeded) chunks.push(chunk);
    });
    stream.once("end", () => {
      if (stream.sizeExceeded) {
        metrics.reports.inc({ outcome: "too_big" });
        return reply(smtpError(replies.messageTooBig));
      }
      const mail = {
        mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
        rcptTo: session.envelope.rcptTo.map((r) => r.address),
        raw: Buffer.concat(chunks),
        ip: session.remoteAddress ?? null,
      };
      const work = receiveReport(receiveDeps, mail).then(
        (outcome) => {
          logOutcome(outcome, mail);
          const answer = replyTo(outcome);
          if (answer.code >= 400) return reply(smtpError(answer));
          reply(null, answer.text);
        },
        (error: Error) => {
          metrics.reports.inc({ outcome: "store_unavailable" });
          log.warn({ err: error, rcptTo: mail.rcptTo }, "report not stored; the sender is told to try again");
          reply(smtpError(replies.storeUnavailable));
        },
      );
      storing.add(work);
      void work.finally(() => storing.delete(work));
    });
  };

  const logOutcome = (
    outcome: ReceiveOutcome,
    mail: { mailFrom: string; rcptTo: string[]; ip: string | null },
  ) => {
    if (outcome.kind === "recorded") {
      metrics.reports.inc({ outcome: outcome.status });
      log.info(
        { messageId: outcome.messageId, recipients: outcome.marked, suppressed: outcome.suppressed },
        `recipients ${outcome.status}`,
      );
    } else if (outcome.kind === "ignored") {
      metrics.reports.inc({ outcome: outcome.reason });
    } else if (outcome.kind === "unmatched") {
      metrics.reports.inc({ outcome: "unmatched" });
      metrics.unmatched.inc({ reason: outcome.reason });
      log.info(
        { reason: outcome.reason, mailFrom: mail.mailFrom, rcptTo: mail.rcptTo, ip: mail.ip },
        "unmatched mail kept in the audit log",
      );
    } else {
      metrics.reports.inc({ outcome: outcome.kind });
    }
  };

  const server = new SMTPServer({
    name: config.smtp.hostname,
    banner: "Postern inbound",
    cert,
    key,
    minVersion: "TLSv1.2",
    disabledCommands: ["AUTH"],
    authOptional: true,
    size: config.bounces.maxMessageSize,
    rejectOversized: true,
    hideENHANCEDSTATUSCODES: false,
    hideSMTPUTF8: false,
    socketTimeout: config.smtp.idleTimeoutMs,
    closeTimeout: config.shutdownTimeoutMs,
    // An MX: whoever connects is a stranger, named by its address in the audit log.
    disableReverseLookup: true,
    logger: false,
    onRcptTo,
    onData,
    onConnect: (session, callback) => {
      metrics.sessions.inc({ listener: String(session.localPort), outcome: "opened" });
      callback();
    },
  });
  server.on("error", (error: Error & { meta?: { stage?: string } }) => {
    if (error.meta?.stage === "connect") return log.debug({ reason: error.message }, "TLS handshake failed");
    log.warn({ err: error }, "inbound listener error");
  });
  createConnectionGate({
    maxConnections: config.smtp.maxConnections,
    maxConnectionsPerIp: config.smtp.maxConnectionsPerIp,
    handshakeTimeoutMs: config.smtp.tlsHandshakeTimeoutMs,
    metrics,
    log,
  }).guard(server, false);
  limitSessions(server, {
    tlsHandshakeTimeoutMs: config.smtp.tlsHandshakeTimeoutMs,
    dataDeadlineMs: config.smtp.dataDeadlineMs,
    hardErrorLimit: config.smtp.hardErrorLimit,
    onCut: (session, reason) => {
      metrics.sessionsCut.inc({ reason });
      log.info({ session: session.id, ip: session.remoteAddress, reason }, "session ended by a limit");
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(overrides.port ?? config.bounces.inboundPort, config.smtp.host, () => {
      server.server.off("error", reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;

  return {
    describe: [`Inbound  ${config.smtp.host}:${port}  (bounces and complaints for ${domain})`],
    port,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle sessions hear 421 now; one inside DATA gets its reply first (and 421 at its next command).
      for (const connection of server.connections)
        if (!inData.has(connection.session.id)) connection.send(421, replies.shuttingDown.text);
      await Promise.race([
        Promise.all([closed, ...storing]),
        new Promise((resolve) => setTimeout(resolve, config.shutdownTimeoutMs + 1_000).unref()),
      ]);
    },
  };
}

/** The reply to a received message (inboundReplies, docs/smtp.md). */
function replyTo(outcome: ReceiveOutcome): SmtpReply {
  switch (outcome.kind) {
    case "recorded":
    case "duplicate":
    case "ignored":
      return replies.reportRecorded;
    case "unmatched":
      return replies.keptForOperator;
    case "retry_later":
      return replies.deliveryNotRecorded;
  }
}
