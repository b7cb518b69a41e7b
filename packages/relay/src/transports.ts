import { Readable } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { UpstreamCircuits } from "./circuit";
import { type UpstreamVerdict, verdictOfError, verdictOfReply } from "./classify";
import { adaptSmtpClient } from "./dot-stuffing";
import { parseUpstreamUrl } from "./upstream";

/** A project's upstream as stored: public URL, and the password already opened by the caller. */
export interface ProjectUpstream {
  projectId: string;
  upstreamUrl: string;
  password: string | undefined;
  /** Direct delivery: how the session is set up beyond what the URL says (docs/routing.md). */
  session?: SessionSettings;
}

/** A session's source address and TLS demands, for MX hosts reached by address. */
export interface SessionSettings {
  /** Source address of the connection: one of the project's `localAddresses`. */
  localAddress?: string;
  /** STARTTLS or nothing is sent (a route's `tls: "required"` or `"verify"`). */
  requireTls?: boolean;
  /** The certificate must be valid for this name (the MX host's, with `tls: "verify"`). */
  verifyName?: string;
}

export interface RelayEnvelope {
  mailFrom: string;
  recipients: string[];
  /** The stored bytes, sent unchanged. */
  raw: Buffer;
  /**
   * Header fields sent in front of `raw` (the DKIM signature), awaited only once DATA is under
   * way: they are made while MAIL and RCPT travel. A rejection ends the transaction as an error
   * of the message.
   */
  prefix?: Promise<Buffer>;
}

export interface RecipientVerdict extends UpstreamVerdict {
  address: string;
}

export interface RelayResult {
  upstreamHost: string;
  /**
   * Set when the message was not sent because no connection could be had now: the verdict is then
   * a deferral, and a caller with a queue gives the delivery back instead of recording it.
   */
  busy?: ConnectionBusy;
  /** The verdict on the transaction as a whole: the DATA reply, or the error that ended it. */
  verdict: UpstreamVerdict;
  recipients: RecipientVerdict[];
}

/**
 * No connection for this delivery now, and it did not start: it goes back to the queue for
 * `retryInMs` (not an attempt) rather than hold a worker slot while it waits.
 */
export interface ConnectionBusy {
  kind: "busy";
  retryInMs: number;
  reason: "project_busy" | "upstream_busy" | "upstream_probing";
}

export interface UpstreamTransportsOptions {
  /** Connections per project (and so deliveries in flight per project) per process. */
  maxConnections: number;
  /** Connections to one upstream (host:port), all projects together, per process. */
  maxUpstreamConnections?: number;
  /**
   * A connection not ready for a message within this (DNS, TCP, TLS, greeting, EHLO, STARTTLS:
   * nodemailer's `connectionTimeout` covers the whole setup) fails.
   */
  connectTimeoutMs?: number;
  /** No greeting within this once connected (and within `connectTimeoutMs`): the attempt fails. */
  greetingTimeoutMs?: number;
  /** Failures to connect in a row that suspend an upstream, and for how long (see circuit.ts). */
  circuit?: { failureThreshold: number; cooldownMs: number };
  /**
   * How long a delivery may wait for one of its project's connections, and only while they turn
   * over (one was freed within this time); otherwise it is given back at once.
   */
  turnWaitMs?: number;
  /** Messages per connection before it is replaced, so a long-lived session cannot go stale. */
  maxMessagesPerConnection?: number;
  /** A project's pool is closed after this long without a message. */
  idleCloseMs?: number;
  /** The name given in EHLO (SMTP_HOSTNAME); MX hosts check it against the sending address. */
  ehloName?: string;
  /**
   * Certificate authorities trusted for verified TLS instead of Node's store (tests' own CA; an
   * operator adds one with NODE_EXTRA_CA_CERTS).
   */
  trustedCa?: string[];
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
  /** The URL says `tls=none`: credentials may be sent over a connection without TLS. */
  authInTheClear: boolean;
  /** A route's TLS policy (`required`, `verify`) demands TLS of this MX host. */
  tlsRequiredByRoute: boolean;
  /** `host:port`: also the key of the upstream's circuit and connection count. */
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

/** A project's connection turns: deliveries holding one, and those waiting (briefly) for one. */
interface ProjectTurns {
  active: number;
  waiting: Array<{ grant: () => void; timer: NodeJS.Timeout | undefined }>;
  /** When a turn was last given back: the project's connections turn over while this is recent. */
  lastFreedAt: number;
}

/** Longest a delivery given back waits before it is taken up again. */
const maxGiveBackMs = 30_000;

/**
 * Per project and upstream URL (the project's own, or a route's), up to `maxConnections` SMTP
 * sessions, opened on first use, reused for up to `maxMessagesPerConnection` messages, replaced
 * when the password changes, closed when idle (so also once the URL is no longer used).
 *
 * Built on nodemailer's SMTP client (`SMTPConnection`) rather than its pooled transport: a relay
 * forwards stored bytes, and the transport's `sendMail` first runs them through nodemailer's
 * message composer (plugins, a MIME node, a generated Message-ID, a stream pipeline) only to send
 * them unchanged. The client alone costs a fraction of the CPU per message that `sendMail` does
 * (docs/benchmarks-history.md, Ninth round). What the pooled
 * transport did between messages is kept: an envelope or message the upstream refused ends with
 * RSET and the session stays in use, any other error closes it, and a reused session the
 * upstream dropped before a byte of the message was sent is replaced, the message going out over a
 * fresh one instead of waiting for a retry.
 *
 * TLS follows the URL's level (upstream.ts): opportunistic STARTTLS without verification,
 * `tls=required` and `smtps://` with the certificate verified unless `verify=false`, `tls=none`
 * without STARTTLS. Credentials go only over TLS unless the URL says `tls=none`. An MX host reached
 * by address gets what its route's TLS policy demands (`session`: STARTTLS required, the
 * certificate verified for the MX host's name) and the project's source address.
 */
export class UpstreamTransports {
  private readonly pools = new Map<string, ProjectPool>();
  /** Per project: deliveries holding one of its `maxConnections` turns, and those waiting for one. */
  private readonly turns = new Map<string, ProjectTurns>();
  /** Per upstream (`host:port`): connections open or being opened, all projects together. */
  private readonly upstreamConnections = new Map<string, number>();
  private readonly circuits: UpstreamCircuits;
  private readonly idleTimer: NodeJS.Timeout;
  private readonly maxMessagesPerConnection: number;
  private readonly maxUpstreamConnections: number;
  private readonly connectTimeoutMs: number;
  private readonly greetingTimeoutMs: number;
  private readonly turnWaitMs: number;

  constructor(private readonly options: UpstreamTransportsOptions) {
    adaptSmtpClient();
    const idleCloseMs = options.idleCloseMs ?? 60_000;
    this.maxMessagesPerConnection = options.maxMessagesPerConnection ?? 100;
    this.maxUpstreamConnections = options.maxUpstreamConnections ?? Number.POSITIVE_INFINITY;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 30_000;
    this.greetingTimeoutMs = options.greetingTimeoutMs ?? 15_000;
    this.turnWaitMs = options.turnWaitMs ?? 1_000;
    this.circuits = new UpstreamCircuits({
      failureThreshold: options.circuit?.failureThreshold ?? 5,
      cooldownMs: options.circuit?.cooldownMs ?? 60_000,
      probeTimeoutMs: this.connectTimeoutMs,
    });
    this.idleTimer = setInterval(() => this.closeIdle(idleCloseMs), Math.min(idleCloseMs, 10_000));
    this.idleTimer.unref();
  }

  /**
   * Runs `delivery` once the project has a connection's worth of room: at most `maxConnections`
   * of its deliveries run at once. Loading a body inside `delivery` rather than before it bounds
   * the bodies held in memory by the project's connections.
   *
   * A delivery whose project has no free turn waits for one (first come, first served) only while
   * the project's connections turn over, a turn having been freed within `turnWaitMs`, and for at
   * most that long: a busy healthy upstream hands a connection on within milliseconds, and taking
   * the job again from the queue would cost Redis round trips for nothing. Otherwise (connections
   * still opening, an upstream that does not greet or answers slowly) the delivery is given back
   * at once (`giveBack`), so a worker slot is never held waiting for a stuck upstream; it comes
   * back after about as long as the project's connections have been stuck (1 to 30 s). A caller
   * that has nowhere to give a delivery back to (no `giveBack`) waits for a turn however long.
   */
  async whenConnectionFree<T>(
    projectId: string,
    delivery: () => Promise<T>,
    giveBack?: (busy: ConnectionBusy) => T,
  ): Promise<T> {
    let turns = this.turns.get(projectId);
    if (!turns) {
      turns = { active: 0, waiting: [], lastFreedAt: Date.now() };
      this.turns.set(projectId, turns);
    }
    if (turns.active < this.options.maxConnections) turns.active += 1;
    else if (!(await this.waitForTurn(turns, giveBack !== undefined)) && giveBack) {
      const stuckMs = Date.now() - turns.lastFreedAt;
      return giveBack({
        kind: "busy",
        retryInMs: giveBackDelay(stuckMs, this.turnWaitMs),
        reason: "project_busy",
      });
    }
    try {
      return await delivery();
    } finally {
      turns.lastFreedAt = Date.now();
      const next = turns.waiting.shift();
      // The turn passes to the next waiting delivery as it is.
      if (next) next.grant();
      else turns.active -= 1;
    }
  }

  /** Deliveries waiting in `whenConnectionFree` for a turn of their project, over all projects. */
  waitingForConnection(): number {
    let waiting = 0;
    for (const turns of this.turns.values()) waiting += turns.waiting.length;
    return waiting;
  }

  /** Upstreams whose circuit is open (deliveries deferred without a connection) or probing. */
  suspendedUpstreams(): number {
    return this.circuits.suspendedCount();
  }

  /** True once a turn is handed over; false when `bounded` and none is to be had soon. */
  private waitForTurn(turns: ProjectTurns, bounded: boolean): Promise<boolean> {
    if (bounded && Date.now() - turns.lastFreedAt >= this.turnWaitMs) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter: ProjectTurns["waiting"][number] = {
        grant: () => {
          clearTimeout(waiter.timer);
          resolve(true);
        },
        timer: bounded
          ? setTimeout(() => {
              turns.waiting.splice(turns.waiting.indexOf(waiter), 1);
              resolve(false);
            }, this.turnWaitMs)
          : undefined,
      };
      turns.waiting.push(waiter);
    });
  }

  /**
   * Sends one message over one of the project's connections and classifies every recipient's
   * answer. An upstream whose circuit is open is not tried: every recipient is deferred with the
   * suspension as the reason. A delivery that would need a new connection while its upstream has
   * `maxUpstreamConnections`, or while another delivery probes it, is not sent (`busy`).
   */
  async relay(upstream: ProjectUpstream, envelope: RelayEnvelope): Promise<RelayResult> {
    const pool = this.poolFor(upstream);
    const admission = this.circuits.admit(pool.upstreamHost);
    if (admission.kind === "suspended") {
      const verdict: UpstreamVerdict = {
        outcome: "deferred",
        code: null,
        enhancedCode: null,
        response: admission.reason,
      };
      return {
        upstreamHost: pool.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, []),
      };
    }
    if (admission.kind === "probing") {
      const retryInMs = giveBackDelay(admission.probeEndsBy - Date.now(), this.turnWaitMs);
      return busyResult(pool, envelope, { kind: "busy", retryInMs, reason: "upstream_probing" });
    }
    pool.inFlight += 1;
    pool.lastUsedAt = Date.now();
    /** Whether the upstream said anything: what a probe's outcome is (see circuit.ts). */
    let answered: boolean | undefined;
    try {
      const info = await this.send(pool, envelope);
      if ("kind" in info) return busyResult(pool, envelope, info);
      answered = true;
      const verdict = verdictOfReply(String(info.response ?? ""), 250);
      return {
        upstreamHost: pool.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(info)),
      };
    } catch (error) {
      const verdict = verdictOfError(error as Error);
      answered = verdict.code !== null;
      return {
        upstreamHost: pool.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(error)),
      };
    } finally {
      pool.inFlight -= 1;
      pool.lastUsedAt = Date.now();
      if (admission.probe) this.circuits.probeEnded(pool.upstreamHost, answered);
    }
  }

  /**
   * Closes the connections every project keeps idle to `upstreamHost` (`host:port`): a destination
   * that pushed back on our load (421, 4.7.x) is left with the sessions in use, not those kept for
   * later (docs/routing.md, Throttling).
   */
  dropIdleConnections(upstreamHost: string): void {
    for (const pool of this.pools.values()) {
      if (pool.upstreamHost !== upstreamHost) continue;
      for (const connection of [...pool.idle]) {
        connection.smtp.quit();
        this.discard(pool, connection);
      }
    }
  }

  /** Closes every connection (graceful shutdown, after in-flight deliveries ended). */
  close(): void {
    clearInterval(this.idleTimer);
    for (const pool of this.pools.values()) this.retire(pool);
    this.pools.clear();
  }

  private async send(
    pool: ProjectPool,
    envelope: RelayEnvelope,
  ): Promise<SMTPConnection.SentMessageInfo | ConnectionBusy> {
    for (;;) {
      const connection = await this.take(pool);
      if ("kind" in connection) return connection;
      if (needsSmtpUtf8(envelope) && !offersSmtpUtf8(connection.smtp)) {
        // Nothing was sent: the session serves the next message.
        this.giveBack(pool, connection);
        throw smtpUtf8NotOffered(pool.upstreamHost);
      }
      const reused = connection.messages > 0;
      connection.messages += 1;
      const message = bodyStream(envelope.raw, envelope.prefix);
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

  /**
   * A free connection of the pool, a new one while it has fewer than `maxConnections` (and its
   * upstream fewer than `maxUpstreamConnections`), or the next one freed.
   */
  private async take(pool: ProjectPool): Promise<UpstreamConnection | ConnectionBusy> {
    for (;;) {
      // `discard` takes a connection out of `idle` as it closes it: what is there is open.
      const idle = pool.idle.pop();
      if (idle) return idle;
      if (pool.open < this.options.maxConnections) {
        const openBefore = this.upstreamConnections.get(pool.upstreamHost) ?? 0;
        if (openBefore >= this.maxUpstreamConnections && !this.closeAnIdleConnection(pool.upstreamHost))
          return { kind: "busy", retryInMs: giveBackDelay(0, this.turnWaitMs), reason: "upstream_busy" };
        // Read again: closing an idle connection freed its slot.
        const upstreamOpen = this.upstreamConnections.get(pool.upstreamHost) ?? 0;
        this.upstreamConnections.set(pool.upstreamHost, upstreamOpen + 1);
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
      /** Greeted, EHLO answered and TLS set up: the upstream takes connections. */
      let connected = false;
      const fail = (error: Error) => {
        this.discard(pool, connection);
        if (settled) return;
        settled = true;
        const failure = error as SMTPConnection.SMTPError;
        // TLS a route demands and the host cannot give is an answer, not a host that is down: it
        // does not suspend the host for the projects that send to it without that demand.
        const refusedByPolicy = pool.tlsRequiredByRoute && isTlsFailure(failure);
        if (!connected && !refusedByPolicy) this.circuits.connectFailed(pool.upstreamHost, error.message);
        reject(refusedByPolicy ? tlsRequired(pool.upstreamHost, failure) : error);
      };
      // After the connection is up, errors of a message also reach its send's callback; an idle
      // connection's (a timeout, the upstream hanging up) only come here.
      smtp.on("error", fail);
      smtp.once("end", () => this.discard(pool, connection));
      smtp.connect((error) => {
        if (error) return fail(error);
        connected = true;
        this.circuits.connected(pool.upstreamHost);
        const ready = () => {
          settled = true;
          resolve(connection);
        };
        // As nodemailer's transports do: credentials are offered only to an upstream that
        // announces AUTH (not in nodemailer's type declarations).
        const offersAuth = (smtp as SMTPConnection & { allowsAuth?: boolean }).allowsAuth === true;
        if (!pool.credentials || !offersAuth) return ready();
        if (!smtp.secure && !pool.authInTheClear) return fail(authWithoutTls(pool.upstreamHost));
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
    const upstreamOpen = (this.upstreamConnections.get(pool.upstreamHost) ?? 1) - 1;
    if (upstreamOpen > 0) this.upstreamConnections.set(pool.upstreamHost, upstreamOpen);
    else this.upstreamConnections.delete(pool.upstreamHost);
    const index = pool.idle.indexOf(connection);
    if (index >= 0) pool.idle.splice(index, 1);
    pool.waiting.shift()?.(undefined);
  }

  /**
   * At the upstream's cap, a project that needs a connection takes the slot of one another project
   * keeps idle (the pool with the most idle ones gives it up): kept connections save a handshake,
   * they must not stall a project that has mail to send (two projects relaying through one
   * provider's host: the first one's idle pool held the slots while the second one's deliveries
   * were given back, for a minute, until the idle pool closed). Says whether a slot was freed.
   */
  private closeAnIdleConnection(upstreamHost: string): boolean {
    let donor: ProjectPool | undefined;
    for (const candidate of this.pools.values())
      if (candidate.upstreamHost === upstreamHost && candidate.idle.length > (donor?.idle.length ?? 0))
        donor = candidate;
    const connection = donor?.idle.pop();
    if (!donor || !connection) return false;
    connection.smtp.quit();
    this.discard(donor, connection);
    return true;
  }

  private retire(pool: ProjectPool): void {
    pool.retired = true;
    for (const connection of [...pool.idle]) {
      connection.smtp.quit();
      this.discard(pool, connection);
    }
  }

  private poolFor(upstream: ProjectUpstream): ProjectPool {
    // One pool per project and upstream URL (a project's routes may name several) and session
    // settings (an MX host is reached from each source address of the project); one no longer used
    // closes when idle.
    const session = upstream.session ?? {};
    const key = `${upstream.projectId}\n${upstream.upstreamUrl}\n${session.localAddress ?? ""}\n${session.requireTls ? (session.verifyName ?? "tls") : ""}`;
    const fingerprint = upstream.password ?? "";
    const existing = this.pools.get(key);
    if (existing?.fingerprint === fingerprint) return existing;
    // The password changed: messages in flight finish on the old connections, which then close.
    if (existing) this.retire(existing);
    const { upstream: target } = parseUpstreamUrl(upstream.upstreamUrl);
    const verifyCertificate = target.verifyCertificate || session.verifyName !== undefined;
    const pool: ProjectPool = {
      fingerprint,
      options: {
        host: target.host,
        port: target.port,
        secure: target.secure,
        requireTLS: target.tls === "required" || session.requireTls === true,
        ignoreTLS: target.tls === "none",
        localAddress: session.localAddress,
        tls: {
          rejectUnauthorized: verifyCertificate,
          // An MX host is connected to by address: SNI and the certificate check use its name.
          ...(session.verifyName ? { servername: session.verifyName } : {}),
          ...(verifyCertificate && this.options.trustedCa ? { ca: this.options.trustedCa } : {}),
        },
        connectionTimeout: this.connectTimeoutMs,
        greetingTimeout: this.greetingTimeoutMs,
        socketTimeout: 120_000,
        name: this.options.ehloName,
        logger: false,
      },
      credentials: target.user ? { user: target.user, pass: upstream.password ?? "" } : undefined,
      authInTheClear: target.tls === "none",
      tlsRequiredByRoute: session.requireTls === true,
      upstreamHost: `${target.host}:${target.port}`,
      idle: [],
      open: 0,
      waiting: [],
      retired: false,
      lastUsedAt: Date.now(),
      inFlight: 0,
    };
    this.pools.set(key, pool);
    return pool;
  }

  private closeIdle(idleCloseMs: number): void {
    for (const [projectId, turns] of this.turns)
      if (turns.active === 0 && turns.waiting.length === 0) this.turns.delete(projectId);
    const now = Date.now();
    for (const [key, pool] of this.pools) {
      if (pool.inFlight === 0 && now - pool.lastUsedAt > idleCloseMs) {
        this.retire(pool);
        this.pools.delete(key);
      }
    }
  }
}

/** A message not sent for want of a connection: deferred for a caller that cannot give it back. */
function busyResult(pool: ProjectPool, envelope: RelayEnvelope, busy: ConnectionBusy): RelayResult {
  const verdict: UpstreamVerdict = {
    outcome: "deferred",
    code: null,
    enhancedCode: null,
    response: `no connection to ${pool.upstreamHost} free (${busy.reason.replace("_", " ")})`,
  };
  return {
    upstreamHost: pool.upstreamHost,
    busy,
    verdict,
    recipients: recipientVerdicts(envelope.recipients, verdict, []),
  };
}

/**
 * How long a delivery given back waits: about as long as what it waits for has been stuck (or has
 * left to run), at least `minMs`, at most `maxGiveBackMs`, ±20% so that those given back together
 * do not return together.
 */
function giveBackDelay(ms: number, minMs: number): number {
  const base = Math.min(Math.max(ms, minMs), maxGiveBackMs);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/** Bytes of a body handed to the SMTP client at a time. */
const bodySliceBytes = 65_536;

/**
 * The body as a stream of slices of the stored buffer (not copies), after the prefix once it is
 * ready. The client's dot-stuffing writes a new buffer for each chunk it is given: given the body
 * whole, a 25 MB message had a second 25 MB copy waiting in the socket; given slices, it has one
 * slice's copy at a time, as the socket drains. And a stream's `readableDidRead` tells whether the
 * upstream got as far as the message's bytes.
 */
function bodyStream(raw: Buffer, prefix: Promise<Buffer> | undefined): Readable {
  let offset = 0;
  let prefixed = prefix === undefined;
  const stream: Readable = new Readable({
    read() {
      if (prefixed) return pushSlice();
      prefixed = true;
      (prefix as Promise<Buffer>).then(
        (fields) => (fields.length > 0 ? stream.push(fields) : pushSlice()),
        (error: Error) => stream.destroy(error),
      );
    },
  });
  const pushSlice = () => {
    const end = Math.min(offset + bodySliceBytes, raw.length);
    if (end > offset) stream.push(raw.subarray(offset, end));
    offset = end;
    if (offset >= raw.length) stream.push(null);
  };
  return stream;
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

/**
 * An upstream that offers AUTH but no TLS (or whose STARTTLS was stripped on the way) never sees
 * the credentials: the delivery is deferred with this reason (ETLS: a TLS problem, retried) until
 * the upstream offers TLS or the operator allows cleartext with `?tls=none`.
 */
function authWithoutTls(upstreamHost: string): SMTPConnection.SMTPError {
  return Object.assign(
    new Error(
      `${upstreamHost} offers AUTH without TLS: credentials are not sent in the clear (add ?tls=none to the upstream URL to allow it)`,
    ),
    { code: "ETLS" },
  );
}

/**
 * An MX host that offers no STARTTLS, or whose TLS handshake or certificate fails, under a route's
 * `required` or `verify` policy: deferred (ETLS) with the reason, and nothing is sent.
 */
function tlsRequired(upstreamHost: string, error: SMTPConnection.SMTPError): SMTPConnection.SMTPError {
  const why = error.response ? `STARTTLS answered: ${error.response}` : error.message;
  return Object.assign(
    new Error(`${upstreamHost}: the route's TLS policy requires TLS, which could not be set up (${why})`),
    { code: "ETLS" },
  );
}

/**
 * A STARTTLS refused or failed (ETLS), or a certificate that does not verify: OpenSSL's and Node's
 * codes, which nodemailer keeps as `originalCode` when it reports the socket's error (ESOCKET).
 */
function isTlsFailure(error: SMTPConnection.SMTPError): boolean {
  const original = (error as { originalCode?: string }).originalCode ?? "";
  return error.code === "ETLS" || /TLS|CERT|SSL|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(original);
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
