import type { AddressInfo, Socket } from "node:net";
import { type CertificatePair, selfSignedCertificate } from "@postern/embedded";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";

export interface ReceivedMessage {
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  /** AUTH username the client used, if any. */
  user: string | undefined;
  /** Whether the session was encrypted when DATA was sent. */
  secure: boolean;
  receivedAt: Date;
  /** smtp-server's id of the session it came over: which messages shared a connection. */
  sessionId: string;
  /** Whether MAIL FROM carried the SMTPUTF8 parameter (RFC 6531). */
  smtpUtf8: boolean;
  /** The client's address (a sending host's source address). */
  remoteAddress: string;
}

/** A reply the sink gives instead of accepting: e.g. { code: 451, message: "4.3.0 try later" }. */
export interface SinkReply {
  code: number;
  message: string;
}

export interface SmtpSinkOptions {
  /** Implicit TLS (smtps). */
  secure?: boolean;
  /** Offer STARTTLS (default true; always false when `secure`). */
  starttls?: boolean;
  /** Require AUTH with this user and password. */
  auth?: { user: string; pass: string };
  /** Advertise SMTPUTF8 in EHLO (default true; false stands for an upstream without RFC 6531). */
  smtputf8?: boolean;
  /** Address to listen on (default 127.0.0.1; 127.0.0.x stand for other hosts, e.g. MX hosts). */
  host?: string;
  /** Port to listen on (default: ephemeral). MX hosts share one port (DIRECT_SMTP_PORT). */
  port?: number;
  /** Offer and accept AUTH on a connection without TLS (a careless upstream; default false). */
  allowInsecureAuth?: boolean;
  /** The certificate it presents (default: a self-signed one for localhost). */
  certificate?: CertificatePair;
}

/**
 * A real SMTP server on an ephemeral loopback port that stands in for a project's upstream.
 * It records envelope and raw bytes, can answer chosen replies per recipient or for DATA, and can
 * be taken down (connections refused) and brought back on the same port.
 */
export class SmtpSink {
  readonly messages: ReceivedMessage[] = [];
  /** Every AUTH a client sent (successful or not), and whether its session had TLS then. */
  readonly authAttempts: { user: string; secure: boolean }[] = [];
  /** Per-recipient answer at RCPT; undefined accepts. */
  rcptReply: (address: string) => SinkReply | undefined = () => undefined;
  /** Answer at MAIL FROM, given the transaction's number within its session (from 1); undefined accepts. */
  mailReply: (transaction: number) => SinkReply | undefined = () => undefined;
  /** Answer at end of DATA; undefined accepts. */
  dataReply: (message: ReceivedMessage) => SinkReply | undefined = () => undefined;
  /** Milliseconds to wait before answering DATA (to observe in-flight deliveries). */
  dataDelayMs = 0;
  /** Awaited, with the bytes received, before answering DATA: holds a delivery on the wire. */
  beforeDataReply: (message: ReceivedMessage) => Promise<void> = async () => {};
  private server: SMTPServer | undefined;
  private readonly sockets = new Set<Socket>();
  private waiters: { count: number; resolve: () => void }[] = [];
  port = 0;

  private constructor(
    private readonly options: SmtpSinkOptions,
    readonly certificate: CertificatePair,
  ) {}

  static async start(options: SmtpSinkOptions = {}): Promise<SmtpSink> {
    const sink = new SmtpSink(options, options.certificate ?? (await selfSignedCertificate("localhost")));
    await sink.up();
    return sink;
  }

  /** smtp://… or smtps://… URL for a project's upstream, with credentials when AUTH is on. */
  get url(): string {
    const auth = this.options.auth
      ? `${encodeURIComponent(this.options.auth.user)}:${encodeURIComponent(this.options.auth.pass)}@`
      : "";
    return `${this.options.secure ? "smtps" : "smtp"}://${auth}${this.options.host ?? "127.0.0.1"}:${this.port}`;
  }

  /** Resolves when at least `count` messages have arrived. */
  waitFor(count: number, timeoutMs = 10_000): Promise<void> {
    if (this.messages.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`sink: ${this.messages.length} of ${count} messages after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** Client connections open now. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /** The most client connections open at once since the sink started. */
  mostOpenConnections = 0;

  /** Hangs up on every client, as an upstream that restarts or times out idle sessions does. */
  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Stops listening: new connections are refused until `up()`. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async up(): Promise<void> {
    if (this.server) return;
    const { secure = false, auth } = this.options;
    const serverOptions: SMTPServerOptions = {
      secure,
      key: this.certificate.key,
      cert: this.certificate.cert,
      disabledCommands: [
        ...(auth ? [] : ["AUTH"]),
        ...(this.options.starttls === false || secure ? ["STARTTLS"] : []),
      ],
      authOptional: !auth,
      hideSMTPUTF8: this.options.smtputf8 === false,
      allowInsecureAuth: this.options.allowInsecureAuth === true,
      logger: false,
      banner: "postern test sink",
      onAuth: (credentials, session, callback) => {
        this.authAttempts.push({ user: credentials.username ?? "", secure: session.secure });
        if (auth && credentials.username === auth.user && credentials.password === auth.pass) {
          callback(null, { user: credentials.username });
        } else {
          callback(Object.assign(new Error("5.7.8 bad credentials"), { responseCode: 535 }));
        }
      },
      onMailFrom: (_address, session, callback) => {
        const reply = this.mailReply(session.transaction);
        if (reply) callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
        else callback();
      },
      onRcptTo: (address, _session, callback) => {
        const reply = this.rcptReply(address.address);
        if (reply) callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
        else callback();
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("end", () => {
          const message: ReceivedMessage = {
            mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            rcptTo: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(chunks),
            user: typeof session.user === "string" ? session.user : undefined,
            secure: session.secure,
            receivedAt: new Date(),
            sessionId: session.id,
            smtpUtf8: session.envelope.smtpUtf8 === true,
            remoteAddress: session.remoteAddress,
          };
          setTimeout(async () => {
            await this.beforeDataReply(message);
            const reply = this.dataReply(message);
            if (reply) return callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
            this.messages.push(message);
            this.notify();
            callback(null, "2.0.0 sink accepted");
          }, this.dataDelayMs);
        });
      },
    };
    const server = new SMTPServer(serverOptions);
    server.on("error", () => {});
    server.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      this.mostOpenConnections = Math.max(this.mostOpenConnections, this.sockets.size);
      socket.once("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(this.port || this.options.port || 0, this.options.host ?? "127.0.0.1", () => resolve());
    });
    this.port = (server.server.address() as AddressInfo).port;
    this.server = server;
  }

  async stop(): Promise<void> {
    await this.down();
  }

  private notify(): void {
    const ready = this.waiters.filter((w) => this.messages.length >= w.count);
    this.waiters = this.waiters.filter((w) => this.messages.length < w.count);
    for (const waiter of ready) waiter.resolve();
  }
}
