import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { isAscii } from "./message";
import { replies } from "./replies";

/**
 * smtp-server derives the enhanced status code from the basic code alone (553 → 5.1.3, 452 →
 * 4.2.2, 538 → 5.7.0), while CONTRACT §3 fixes specific ones (553 5.7.1, 452 4.5.3, 538 5.7.11).
 * It has no option for that, so its single write method is wrapped once: a text that already
 * starts with an enhanced code is sent as is, and the built-in replies we must word differently
 * are translated. Four more things it cannot be told: hide AUTH from EHLO before TLS, end the
 * session after a 521, greet without a pause, and keep an ASCII domain as the client wrote it
 * (see `adaptSmtpServer`). Checked against smtp-server 3.21 (apps/smtp/test covers every reply,
 * the greeting and the addresses).
 */
const enhancedCode = /^[245]\.\d{1,3}\.\d{1,3} /;

const builtIn = new Map<string, string>([
  ["538 Error: Must issue a STARTTLS command first", replies.authBeforeTls.text],
  ["421 Server shutting down", replies.shuttingDown.text],
]);

type Send = (code: number, data?: string | string[] | null, context?: string | false) => void;
type ParsedAddress = false | { address: string };
type ParseAddress = (name: string, command: Buffer | string) => ParsedAddress;
type Connection = {
  secure: boolean;
  close(): void;
  send: Send;
  init(): void;
  _setListeners(ready: () => void): void;
  connectionReady(): void;
  _parseAddressCommand: ParseAddress;
};

let installed = false;

/** Installs the prompt greeting and the reply-code translation, once per process. */
export function adaptSmtpServer(): void {
  if (installed) return;
  installed = true;
  const prototype = SMTPConnection.prototype as unknown as Connection;
  // smtp-server holds every new connection 100 ms before its greeting to catch clients that talk
  // too soon: an MX server's defence against spam bots (Postfix's postscreen greet pause, which
  // Postfix does not put on submission). Here nothing can be sent before STARTTLS and AUTH, so
  // the pause only cost every client 100 ms a connection: 20 clients connecting for each message
  // could not send more than about 150 messages a second (20 / 0.13 s). The greeting now
  // goes out as soon as onConnect has answered; our onConnect enforces the connection limits
  // (smtp-server's own maxClients check, which lived in the replaced init, is not used).
  prototype.init = function (this: Connection) {
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
  prototype.send = function (this: Connection, code, data, context) {
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
    // CONTRACT §3: AUTH is advertised only after TLS (smtp-server lists it in every EHLO).
    if (code === 250 && Array.isArray(data) && !this.secure)
      return send.call(
        this,
        code,
        data.filter((line) => !line.startsWith("AUTH ")),
        context,
      );
    return send.call(this, code, data, context);
  };
}
