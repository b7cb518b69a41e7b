import type { Socket } from "node:net";
import type { SMTPServer, SMTPServerSession } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { isAscii } from "./message";
import { replies, type SmtpReply } from "./replies";

/**
 * smtp-server derives the enhanced status code from the basic code alone (553 → 5.1.3, 452 →
 * 4.2.2, 538 → 5.7.0), while Postern answers specific ones (docs/smtp.md) (553 5.7.1, 452 4.5.3, 538 5.7.11).
 * It has no option for that, so its single write method is wrapped once: a text that already
 * starts with an enhanced code is sent as is, and the built-in replies we must word differently
 * are translated. More things it cannot be told: hide AUTH from EHLO before TLS, end the session
 * after a 521, greet without a pause, keep an ASCII domain as the client wrote it (see
 * `adaptSmtpServer`), and the session limits of `limitSessions`. Checked against smtp-server 3.21
 * (apps/smtp/test covers every reply, the greeting, the addresses and the limits).
 */
const enhancedCode = /^[245]\.\d{1,3}\.\d{1,3} /;

const builtIn = new Map<string, string>([
  ["538 Error: Must issue a STARTTLS command first", replies.authBeforeTls.text],
  ["421 Server shutting down", replies.shuttingDown.text],
]);

/** Why a limit ended a session (the `reason` label of postern_smtp_sessions_cut_total). */
export type SessionCut = "handshake_timeout" | "auth_deadline" | "data_deadline" | "error_limit";

/** Deadlines and the error limit of every session of one listener (docs/security.md). */
export interface SessionLimits {
  /** From STARTTLS until TLS is up. */
  tlsHandshakeTimeoutMs: number;
  /** From the start of the session until a successful AUTH; undefined: a listener without AUTH (the inbound role). */
  authDeadlineMs?: number;
  /** From 354 until the message's final dot. */
  dataDeadlineMs: number;
  /** 4xx and 5xx replies without a message accepted in between; then 421. */
  hardErrorLimit: number;
  /** Told before a limit ends the session. */
  onCut(session: SMTPServerSession, reason: SessionCut): void;
}

/**
 * Marks a 'close' listener of an accepted socket that must outlive STARTTLS: smtp-server's upgrade
 * removes every listener of the plain socket, which the TLS socket then wraps.
 */
export const keptOnUpgrade = Symbol("postern.keptOnUpgrade");

type Send = (code: number, data?: string | string[] | null, context?: string | false) => void;
type ParsedAddress = false | { address: string };
type ParseAddress = (name: string, command: Buffer | string) => ParsedAddress;
type Connection = {
  _server: object;
  _socket: Socket;
  session: SMTPServerSession;
  secure: boolean;
  _upgrading: boolean;
  _closing: boolean;
  _closed: boolean;
  _dataStream: unknown;
  _parser: { _dataMode: boolean } | false;
  close(): void;
  send: Send;
  init(): void;
  _setListeners(ready: () => void): void;
  connectionReady(): void;
  _parseAddressCommand: ParseAddress;
  upgrade(callback: () => void, secureCallback?: () => void): void;
  handler_DATA(command: Buffer, callback: () => void): void;
  _onClose(): void;
  [limited]?: LimitedSession;
};

/** Per session: its limits, refusals counted, and the deadlines armed. */
interface LimitedSession {
  limits: SessionLimits;
  errors: number;
  auth: NodeJS.Timeout | undefined;
  data: NodeJS.Timeout | undefined;
  handshake: NodeJS.Timeout | undefined;
}

const limited = Symbol("postern.limitedSession");
const limitsOfServer = new WeakMap<object, SessionLimits>();

/** Applies `limits` to the sessions `server` starts from now on. */
export function limitSessions(server: SMTPServer, limits: SessionLimits): void {
  limitsOfServer.set(server, limits);
}

let installed = false;

/** Installs the prompt greeting, the reply-code translation and the session limits, once per process. */
export function adaptSmtpServer(): void {
  if (installed) return;
  installed = true;
  const prototype = SMTPConnection.prototype as unknown as Connection;
  // smtp-server holds every new connection 100 ms before its greeting to catch clients that talk
  // too soon: an MX server's defence against spam bots (Postfix's postscreen greet pause, which
  // Postfix does not put on submission). Here nothing can be sent before STARTTLS and AUTH, so
  // the pause only cost every client 100 ms a connection: 20 clients connecting for each message
  // could not send more than about 150 messages a second (20 / 0.13 s). The greeting now
  // goes out as soon as onConnect has answered. The connection limits are held before this, at
  // TCP accept (connection-gate.ts); smtp-server's own maxClients check, which lived in the
  // replaced init, is not used.
  prototype.init = function (this: Connection) {
    const limits = limitsOfServer.get(this._server);
    if (limits) {
      const session: LimitedSession = {
        limits,
        errors: 0,
        auth: undefined,
        data: undefined,
        handshake: undefined,
      };
      this[limited] = session;
      if (limits.authDeadlineMs !== undefined)
        session.auth = deadline(
          this,
          limits.authDeadlineMs,
          "auth_deadline",
          replies.authDeadline,
          () => !this.session.user,
        );
    }
    this._setListeners(() => this.connectionReady());
  };
  // smtp-server turns an A-label domain (`xn--bcher-kva.example`) into Unicode (`bücher.example`):
  // the address would then be one that needs SMTPUTF8 although the client sent ASCII, and would be
  // stored and relayed otherwise than sent. The domain goes back to what the client wrote.
  const parseAddress = prototype._parseAddressCommand;
  prototype._parseAddressCommand = function (this: Connection, name, command) {
    const parsed = parseAddress.call(this, name, command);
    if (!parsed || isAscii(parsed.address)) return parsed;
    const written = /<(?:[^<>:]*:)?([^<>]*)>/.exec(command.toString())?.[1] ?? "";
    const writtenDomain = written.slice(written.lastIndexOf("@") + 1);
    if (!written.includes("@") || !isAscii(writtenDomain)) return parsed;
    const at = parsed.address.lastIndexOf("@");
    return { ...parsed, address: `${parsed.address.slice(0, at)}@${writtenDomain}` };
  };
  const send = prototype.send;
  const translate: Send = function (this: Connection, code, data, context) {
    if (typeof data === "string") {
      const translated = builtIn.get(`${code} ${data}`);
      if (translated) return send.call(this, code, translated, false);
      if (enhancedCode.test(data)) {
        send.call(this, code, data, false);
        // 521: the session is over (Postfix does the same after a bare newline).
        if (code === 521) this.close();
        return;
      }
    }
    // AUTH is advertised only after TLS (docs/smtp.md, Session) (smtp-server lists it in every EHLO).
    if (code === 250 && Array.isArray(data) && !this.secure)
      return send.call(
        this,
        code,
        data.filter((line) => !line.startsWith("AUTH ")),
        context,
      );
    return send.call(this, code, data, context);
  };
  prototype.send = function (this: Connection, code, data, context) {
    translate.call(this, code, data, context);
    const session = this[limited];
    if (!session) return;
    // Any reply after 354 ends the DATA phase; 235 is a successful AUTH.
    if (code !== 354) session.data = clear(session.data);
    if (code === 235) session.auth = clear(session.auth);
    // As Postfix counts errors "without delivering mail": a message accepted starts again.
    if (code === 250 && context === "DATA_OK") session.errors = 0;
    else if (code >= 400 && code !== 421 && ++session.errors >= session.limits.hardErrorLimit)
      cut(this, "error_limit", replies.tooManyErrors);
  };

  const handleData = prototype.handler_DATA;
  prototype.handler_DATA = function (this: Connection, command, callback) {
    handleData.call(this, command, callback);
    const session = this[limited];
    // Armed once 354 is out; what counts is the client's sending, not the store's answer after it.
    if (session && this._dataStream)
      session.data = deadline(
        this,
        session.limits.dataDeadlineMs,
        "data_deadline",
        replies.dataDeadline,
        () => this._parser !== false && this._parser._dataMode,
      );
  };

  // STARTTLS: smtp-server times the handshake with the idle timeout, which every byte resets.
  const upgrade = prototype.upgrade;
  prototype.upgrade = function (this: Connection, callback, secureCallback) {
    const plain = this._socket;
    const kept = (plain.listeners("close") as (() => void)[]).filter((listener) => keptOnUpgrade in listener);
    upgrade.call(this, callback, secureCallback);
    for (const listener of kept) plain.on("close", listener);
    const session = this[limited];
    // Nothing can be said in the middle of a handshake: the connection is only closed.
    if (session)
      session.handshake = deadline(
        this,
        session.limits.tlsHandshakeTimeoutMs,
        "handshake_timeout",
        undefined,
        () => this._upgrading,
      );
  };

  const onClose = prototype._onClose;
  prototype._onClose = function (this: Connection) {
    const session = this[limited];
    if (session) {
      session.auth = clear(session.auth);
      session.data = clear(session.data);
      session.handshake = clear(session.handshake);
    }
    onClose.call(this);
  };
}

/** A deadline that ends the session (with `reply`, a 421) if `due()` still holds when it passes. */
function deadline(
  connection: Connection,
  ms: number,
  reason: SessionCut,
  reply: SmtpReply | undefined,
  due: () => boolean,
): NodeJS.Timeout {
  const timer = setTimeout(() => {
    if (due()) cut(connection, reason, reply);
  }, ms);
  timer.unref();
  return timer;
}

function cut(connection: Connection, reason: SessionCut, reply: SmtpReply | undefined) {
  if (connection._closing || connection._closed) return;
  connection[limited]?.limits.onCut(connection.session, reason);
  // smtp-server closes the connection after any 421.
  if (reply) connection.send(reply.code, reply.text);
  else connection.close();
}

function clear(timer: NodeJS.Timeout | undefined): undefined {
  if (timer) clearTimeout(timer);
  return undefined;
}
