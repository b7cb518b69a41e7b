import { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import pLimit, { type LimitFunction } from "p-limit";
import { type UpstreamVerdict, verdictOfError, verdictOfReply } from "./classify";
import { adaptSmtpClient } from "./dot-stuffing";
import { parseUpstreamUrl } from "./upstream";

/** A project's upstream as stored: public URL, and the password already opened by the caller. */
export interface ProjectUpstream {
  projectId: string;
  upstreamUrl: string;
  password: string | undefined;
}

export interface RelayEnvelope {
  mailFrom: string;
  recipients: string[];
  /** The stored bytes, sent unchanged. */
  raw: Buffer;
}

export interface RecipientVerdict extends UpstreamVerdict {
  address: string;
}

export interface RelayResult {
  upstreamHost: string;
  /** The verdict on the transaction as a whole: the DATA reply, or the error that ended it. */
  verdict: UpstreamVerdict;
  recipients: RecipientVerdict[];
}

export interface UpstreamTransportsOptions {
  /** Connections per project (and so deliveries in flight per project) per process. */
  maxConnections: number;
  /** Messages per connection before it is replaced, so a long-lived session cannot go stale. */
  maxMessagesPerConnection?: number;
  /** A project's pool is closed after this long without a message. */
  idleCloseMs?: number;
}

/** One SMTP session with an upstream, kept open between messages. */
interface UpstreamConnection {
  smtp: SMTPConnection;
  /** Messages sent over it (refused ones included): it is replaced after `maxMessagesPerConnection`. */
  messages: number;
  /** Its socket ended or failed, or we closed it: never handed out again. */
  closed: boolean;
}

/** A project's connections to its upstream. */
interface ProjectPool {
  /** The upstream settings it was built from: a change replaces the pool. */
  fingerprint: string;
  options: SMTPConnection.Options;
  credentials: SMTPConnection.Credentials | undefined;
  upstreamHost: string;
  /** Open and free, the most recently used last. */
  idle: UpstreamConnection[];
  /** Open, or being opened: at most `maxConnections`. */
  open: number;
  /** Sends waiting for a connection: handed one that was freed, or `undefined` when a slot was. */
  waiting: Array<(connection: UpstreamConnection | undefined) => void>;
  /** Replaced (the upstream changed) or shut down: its connections close as they come back. */
  retired: boolean;
  lastUsedAt: number;
  inFlight: number;
}

/**
 * Per project, up to `maxConnections` SMTP sessions with its upstream, opened on first use, reused
 * for up to `maxMessagesPerConnection` messages, replaced when the project's upstream URL or
 * password changes, closed when idle.
 *
 * Built on nodemailer's SMTP client (`SMTPConnection`) rather than its pooled transport: a relay
 * forwards stored bytes, and the transport's `sendMail` first runs them through nodemailer's
 * message composer (plugins, a MIME node, a generated Message-ID, a stream pipeline) only to send
 * them unchanged. Measured with 10 KiB messages over 10 connections to `smtp-sink`, the client's
 * CPU per message went from 360–500 µs to 80–160 µs (docs/benchmarks.md). What the pooled
 * transport did between messages is kept: an envelope or message the upstream refused ends with
 * RSET and the session stays in use, any other error closes it, and a reused session the
 * upstream dropped before a byte of the message was sent is replaced, the message going out over a
 * fresh one instead of waiting for a retry.
 *
 * TLS follows Postfix's levels: `smtp://` is opportunistic (STARTTLS when offered, like
 * `smtp_tls_security_level=may`), `?tls=required` refuses to send without it (`encrypt`) and
 * `smtps://` is TLS from the first byte. As in Postfix's `may`/`encrypt`, the certificate is not
 * verified: an MX or relay certificate rarely matches the name used, and an unverified TLS
 * session still protects against passive capture.
 */
export class UpstreamTransports {
  private readonly pools = new Map<string, ProjectPool>();
  /** Per project: deliveries holding one of its `maxConnections` turns, and those waiting for one. */
  private readonly turns = new Map<string, LimitFunction>();
  private readonly idleTimer: NodeJS.Timeout;
  private readonly maxMessagesPerConnection: number;

  constructor(private readonly options: UpstreamTransportsOptions) {
    adaptSmtpClient();
    const idleCloseMs = options.idleCloseMs ?? 60_000;
    this.maxMessagesPerConnection = options.maxMessagesPerConnection ?? 100;
    this.idleTimer = setInterval(() => this.closeIdle(idleCloseMs), Math.min(idleCloseMs, 10_000));
    this.idleTimer.unref();
  }

  /**
   * Runs `delivery` once the project has a connection's worth of room: at most `maxConnections`
   * of its deliveries run at once, the others wait here, first come first served. A worker
   * takes up to DELIVERY_CONCURRENCY jobs; loading a body inside `delivery` rather than before
   * it bounds the bodies held in memory by the project's connections, instead of keeping the
   * rest loaded while they wait for a connection.
   */
  async whenConnectionFree<T>(projectId: string, delivery: () => Promise<T>): Promise<T> {
    let limit = this.turns.get(projectId);
    if (!limit) {
      limit = pLimit(this.options.maxConnections);
      this.turns.set(projectId, limit);
    }
    return limit(delivery);
  }

  /** Deliveries waiting in `whenConnectionFree` for a turn of their project, over all projects. */
  waitingForConnection(): number {
    let waiting = 0;
    for (const limit of this.turns.values()) waiting += limit.pendingCount;
    return waiting;
  }

  /** Sends one message over one of the project's connections and classifies every recipient's answer. */
  async relay(upstream: ProjectUpstream, envelope: RelayEnvelope): Promise<RelayResult> {
    const pool = this.poolFor(upstream);
    pool.inFlight += 1;
    pool.lastUsedAt = Date.now();
    try {
      const info = await this.send(pool, envelope);
      const verdict = verdictOfReply(String(info.response ?? ""), 250);
      return {
        upstreamHost: pool.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(info)),
      };
    } catch (error) {
      const verdict = verdictOfError(error as Error);
      return {
        upstreamHost: pool.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(error)),
      };
    } finally {
      pool.inFlight -= 1;
      pool.lastUsedAt = Date.now();
    }
  }

  /** Closes every connection (graceful shutdown, after in-flight deliveries ended). */
  close(): void {
    clearInterval(this.idleTimer);
    for (const pool of this.pools.values()) this.retire(pool);
    this.pools.clear();
  }

  private async send(pool: ProjectPool, envelope: RelayEnvelope): Promise<SMTPConnection.SentMessageInfo> {
    for (;;) {
      const connection = await this.take(pool);
      if (needsSmtpUtf8(envelope) && !offersSmtpUtf8(connection.smtp)) {
        // Nothing was sent: the session serves the next message.
        this.giveBack(pool, connection);
        throw smtpUtf8NotOffered(pool.upstreamHost);
      }
      const reused = connection.messages > 0;
      connection.messages += 1;
      const message = bodyStream(envelope.raw);
      try {
        const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) => {
          connection.smtp.send(
            { from: envelope.mailFrom, to: envelope.recipients },
            message,
            (error, sent) => (error ? reject(error) : resolve(sent)),
          );
        });
        this.giveBack(pool, connection);
        return info;
      } catch (error) {
        const failure = error as SMTPConnection.SMTPError;
        if (reused && !message.readableDidRead && isDroppedSession(failure)) {
          // The upstream ended a session we kept (its idle timeout, a restart) before the message
          // was sent: nothing reached it, so the message goes over a fresh connection now.
          this.discard(pool, connection);
          continue;
        }
        if (refusedTheMessageOnly(failure) && !connection.closed) this.resetAndGiveBack(pool, connection);
        else this.discard(pool, connection);
        throw error;
      }
    }
  }

  /** A free connection of the pool, a new one while it has fewer than `maxConnections`, or the next one freed. */
  private async take(pool: ProjectPool): Promise<UpstreamConnection> {
    for (;;) {
      // `discard` takes a connection out of `idle` as it closes it: what is there is open.
      const idle = pool.idle.pop();
      if (idle) return idle;
      if (pool.open < this.options.maxConnections) {
        pool.open += 1;
        return this.connect(pool);
      }
      const handed = await new Promise<UpstreamConnection | undefined>((resolve) =>
        pool.waiting.push(resolve),
      );
      if (handed) return handed;
    }
  }

  private connect(pool: ProjectPool): Promise<UpstreamConnection> {
    const smtp = new SMTPConnection(pool.options);
    const connection: UpstreamConnection = { smtp, messages: 0, closed: false };
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error: Error) => {
        this.discard(pool, connection);
        if (settled) return;
        settled = true;
        reject(error);
      };
      // After the connection is up, errors of a message also reach its send's callback; an idle
      // connection's (a timeout, the upstream hanging up) only come here.
      smtp.on("error", fail);
      smtp.once("end", () => this.discard(pool, connection));
      smtp.connect((error) => {
        if (error) return fail(error);
        const ready = () => {
          settled = true;
          resolve(connection);
        };
        // As nodemailer's transports do: credentials are offered only to an upstream that
        // announces AUTH (not in nodemailer's type declarations).
        const offersAuth = (smtp as SMTPConnection & { allowsAuth?: boolean }).allowsAuth === true;
        if (!pool.credentials || !offersAuth) return ready();
        smtp.login(pool.credentials, (loginError) => (loginError ? fail(loginError) : ready()));
      });
    });
  }

  /** Back to the pool, or to a send waiting for one; closed instead once it has done its share. */
  private giveBack(pool: ProjectPool, connection: UpstreamConnection): void {
    if (connection.closed) return;
    if (pool.retired || connection.messages >= this.maxMessagesPerConnection) {
      connection.smtp.quit();
      this.discard(pool, connection);
      return;
    }
    const next = pool.waiting.shift();
    if (next) next(connection);
    else pool.idle.push(connection);
  }

  private resetAndGiveBack(pool: ProjectPool, connection: UpstreamConnection): void {
    connection.smtp.reset((error) => {
      if (error) this.discard(pool, connection);
      else this.giveBack(pool, connection);
    });
  }

  /** Closes a connection for good and frees its slot (once, however many ways it ended). */
  private discard(pool: ProjectPool, connection: UpstreamConnection): void {
    if (connection.closed) return;
    connection.closed = true;
    connection.smtp.close();
    pool.open -= 1;
    const index = pool.idle.indexOf(connection);
    if (index >= 0) pool.idle.splice(index, 1);
    pool.waiting.shift()?.(undefined);
  }

  private retire(pool: ProjectPool): void {
    pool.retired = true;
    for (const connection of [...pool.idle]) {
      connection.smtp.quit();
      this.discard(pool, connection);
    }
  }

  private poolFor(upstream: ProjectUpstream): ProjectPool {
    const fingerprint = `${upstream.upstreamUrl}\n${upstream.password ?? ""}`;
    const existing = this.pools.get(upstream.projectId);
    if (existing?.fingerprint === fingerprint) return existing;
    // The upstream changed: messages in flight finish on the old connections, which then close.
    if (existing) this.retire(existing);
    const { upstream: target } = parseUpstreamUrl(upstream.upstreamUrl);
    const pool: ProjectPool = {
      fingerprint,
      options: {
        host: target.host,
        port: target.port,
        secure: target.secure,
        requireTLS: target.requireTls,
        tls: { rejectUnauthorized: false },
        connectionTimeout: 30_000,
        greetingTimeout: 30_000,
        socketTimeout: 120_000,
        logger: false,
      },
      credentials: target.user ? { user: target.user, pass: upstream.password ?? "" } : undefined,
      upstreamHost: `${target.host}:${target.port}`,
      idle: [],
      open: 0,
      waiting: [],
      retired: false,
      lastUsedAt: Date.now(),
      inFlight: 0,
    };
    this.pools.set(upstream.projectId, pool);
    return pool;
  }

  private closeIdle(idleCloseMs: number): void {
    for (const [projectId, limit] of this.turns)
      if (limit.activeCount === 0 && limit.pendingCount === 0) this.turns.delete(projectId);
    const now = Date.now();
    for (const [projectId, pool] of this.pools) {
      if (pool.inFlight === 0 && now - pool.lastUsedAt > idleCloseMs) {
        this.retire(pool);
        this.pools.delete(projectId);
      }
    }
  }
}

/** Bytes of a body handed to the SMTP client at a time. */
const bodySliceBytes = 65_536;

/**
 * The body as a stream of slices of the stored buffer (not copies). The client's dot-stuffing
 * writes a new buffer for each chunk it is given: given the body whole, a 25 MB message had a
 * second 25 MB copy waiting in the socket; given slices, it has one slice's copy at a time, as
 * the socket drains. And a stream's `readableDidRead` tells whether the upstream got as far as
 * the message's bytes.
 */
function bodyStream(raw: Buffer): Readable {
  let offset = 0;
  return new Readable({
    read() {
      const end = Math.min(offset + bodySliceBytes, raw.length);
      if (end > offset) this.push(raw.subarray(offset, end));
      offset = end;
      if (offset >= raw.length) this.push(null);
    },
  });
}

/**
 * A non-ASCII address can only travel with SMTPUTF8 (RFC 6531); nodemailer adds the MAIL
 * parameter when the upstream advertises the extension. UTF-8 in the headers alone is sent as
 * 8-bit content, as before (docs/smtp.md, SMTPUTF8).
 */
function needsSmtpUtf8(envelope: RelayEnvelope): boolean {
  return !isAscii(envelope.mailFrom) || envelope.recipients.some((address) => !isAscii(address));
}

function isAscii(text: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the whole ASCII range
  return /^[\x00-\x7f]*$/.test(text);
}

/** The extensions the upstream listed in its EHLO reply (not in nodemailer's type declarations). */
function offersSmtpUtf8(smtp: SMTPConnection): boolean {
  const extensions = (smtp as SMTPConnection & { _supportedExtensions?: string[] })._supportedExtensions;
  return extensions?.includes("SMTPUTF8") === true;
}

/**
 * RFC 6531 3.2: a message that needs SMTPUTF8 must not be sent to a server that does not offer
 * it, and is returned as undeliverable. Recorded as 553 5.6.7, as Postfix bounces it ("SMTPUTF8 is
 * required, but was not offered by host"): a permanent failure, since retrying the same upstream
 * cannot change its extensions.
 */
function smtpUtf8NotOffered(upstreamHost: string): SMTPConnection.SMTPError {
  const response = `553 5.6.7 SMTPUTF8 is required, but was not offered by ${upstreamHost}`;
  return Object.assign(new Error(response), { code: "EENVELOPE", responseCode: 553, response });
}

/** The session itself went away (closed, reset, timed out, 421): not a verdict on the message. */
function isDroppedSession(error: SMTPConnection.SMTPError): boolean {
  return (
    error.responseCode === 421 ||
    error.code === "ECONNECTION" ||
    error.code === "ESOCKET" ||
    error.code === "ETIMEDOUT"
  );
}

/**
 * The upstream refused this envelope or message and the session is still good: RSET, and the
 * connection serves the next message (a 421 closes the session whatever the phase).
 */
function refusedTheMessageOnly(error: SMTPConnection.SMTPError): boolean {
  return (error.code === "EENVELOPE" || error.code === "EMESSAGE") && error.responseCode !== 421;
}

interface RejectedRecipientError {
  recipient?: string;
  code?: string;
  responseCode?: number;
  response?: string;
  message: string;
}

function rejectedErrorsOf(value: unknown): RejectedRecipientError[] {
  const errors = (value as { rejectedErrors?: RejectedRecipientError[] } | null)?.rejectedErrors;
  return Array.isArray(errors) ? errors : [];
}

/**
 * A recipient the upstream refused at RCPT (or per recipient, LMTP style) gets its own reply;
 * every other recipient shares the transaction's verdict.
 */
function recipientVerdicts(
  recipients: string[],
  verdict: UpstreamVerdict,
  rejected: RejectedRecipientError[],
): RecipientVerdict[] {
  const byAddress = new Map(rejected.map((error) => [error.recipient?.toLowerCase(), error]));
  return recipients.map((address) => {
    const error = byAddress.get(address.toLowerCase());
    return { address, ...(error ? verdictOfError(error) : verdict) };
  });
}
