import nodemailer, { type Transporter } from "nodemailer";
import type SMTPPool from "nodemailer/lib/smtp-pool";
import pLimit, { type LimitFunction } from "p-limit";
import { type UpstreamVerdict, verdictOfError, verdictOfReply } from "./classify";
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

interface PooledTransport {
  /** The upstream settings it was built from: a change rebuilds the pool. */
  fingerprint: string;
  transporter: Transporter<SMTPPool.SentMessageInfo, SMTPPool.Options>;
  upstreamHost: string;
  lastUsedAt: number;
  inFlight: number;
}

/**
 * One pooled nodemailer SMTP transport per project, created on first use, rebuilt when the
 * project's upstream URL or password changes, closed when idle.
 *
 * TLS follows Postfix's levels: `smtp://` is opportunistic (STARTTLS when offered, like
 * `smtp_tls_security_level=may`), `?tls=required` refuses to send without it (`encrypt`) and
 * `smtps://` is TLS from the first byte. As in Postfix's `may`/`encrypt`, the certificate is not
 * verified: an MX or relay certificate rarely matches the name used, and an unverified TLS
 * session still protects against passive capture.
 */
export class UpstreamTransports {
  private readonly pools = new Map<string, PooledTransport>();
  /** Per project: deliveries holding one of its `maxConnections` turns, and those waiting for one. */
  private readonly turns = new Map<string, LimitFunction>();
  private readonly idleTimer: NodeJS.Timeout;

  constructor(private readonly options: UpstreamTransportsOptions) {
    const idleCloseMs = options.idleCloseMs ?? 60_000;
    this.idleTimer = setInterval(() => this.closeIdle(idleCloseMs), Math.min(idleCloseMs, 10_000));
    this.idleTimer.unref();
  }

  /**
   * Runs `delivery` once the project has a connection's worth of room: at most `maxConnections`
   * of its deliveries run at once, the others wait here, first come first served. A worker
   * takes up to DELIVERY_CONCURRENCY jobs; loading a body inside `delivery` rather than before
   * it bounds the bodies held in memory by the project's connections, instead of keeping the
   * rest loaded in the pool's queue until a connection frees up.
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

  /** Sends one message through the project's pool and classifies every recipient's answer. */
  async relay(upstream: ProjectUpstream, envelope: RelayEnvelope): Promise<RelayResult> {
    const pooled = this.poolFor(upstream);
    pooled.inFlight += 1;
    pooled.lastUsedAt = Date.now();
    try {
      const info = await pooled.transporter.sendMail({
        envelope: { from: envelope.mailFrom, to: envelope.recipients },
        raw: envelope.raw,
      });
      const verdict = verdictOfReply(String(info.response ?? ""), 250);
      return {
        upstreamHost: pooled.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(info)),
      };
    } catch (error) {
      const verdict = verdictOfError(error as Error);
      return {
        upstreamHost: pooled.upstreamHost,
        verdict,
        recipients: recipientVerdicts(envelope.recipients, verdict, rejectedErrorsOf(error)),
      };
    } finally {
      pooled.inFlight -= 1;
      pooled.lastUsedAt = Date.now();
    }
  }

  /** Closes every pool (graceful shutdown, after in-flight deliveries ended). */
  close(): void {
    clearInterval(this.idleTimer);
    for (const pooled of this.pools.values()) pooled.transporter.close();
    this.pools.clear();
  }

  private poolFor(upstream: ProjectUpstream): PooledTransport {
    const fingerprint = `${upstream.upstreamUrl}\n${upstream.password ?? ""}`;
    const existing = this.pools.get(upstream.projectId);
    if (existing?.fingerprint === fingerprint) return existing;
    // The upstream changed: messages in flight finish on the old pool, which closes when idle.
    if (existing) existing.transporter.close();
    const { upstream: target } = parseUpstreamUrl(upstream.upstreamUrl);
    const transporter = nodemailer.createTransport({
      pool: true,
      host: target.host,
      port: target.port,
      secure: target.secure,
      requireTLS: target.requireTls,
      auth: target.user ? { user: target.user, pass: upstream.password ?? "" } : undefined,
      maxConnections: this.options.maxConnections,
      maxMessages: this.options.maxMessagesPerConnection ?? 100,
      tls: { rejectUnauthorized: false },
      connectionTimeout: 30_000,
      greetingTimeout: 30_000,
      socketTimeout: 120_000,
      logger: false,
    } satisfies SMTPPool.Options);
    const pooled: PooledTransport = {
      fingerprint,
      transporter,
      upstreamHost: `${target.host}:${target.port}`,
      lastUsedAt: Date.now(),
      inFlight: 0,
    };
    this.pools.set(upstream.projectId, pooled);
    return pooled;
  }

  private closeIdle(idleCloseMs: number): void {
    for (const [projectId, limit] of this.turns)
      if (limit.activeCount === 0 && limit.pendingCount === 0) this.turns.delete(projectId);
    const now = Date.now();
    for (const [projectId, pooled] of this.pools) {
      if (pooled.inFlight === 0 && now - pooled.lastUsedAt > idleCloseMs) {
        pooled.transporter.close();
        this.pools.delete(projectId);
      }
    }
  }
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
