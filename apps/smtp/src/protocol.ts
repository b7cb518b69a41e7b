import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { replies } from "./replies";

/**
 * smtp-server derives the enhanced status code from the basic code alone (553 → 5.1.3, 452 →
 * 4.2.2, 538 → 5.7.0), while CONTRACT §3 fixes specific ones (553 5.7.1, 452 4.5.3, 538 5.7.11).
 * It has no option for that, so its single write method is wrapped once: a text that already
 * starts with an enhanced code is sent as is, and the built-in replies we must word differently
 * are translated. Two more things it cannot be told: hide AUTH from EHLO before TLS, and end the
 * session after a 521. Checked against smtp-server 3.21 (apps/smtp/test covers every reply).
 */
const enhancedCode = /^[245]\.\d{1,3}\.\d{1,3} /;

const builtIn = new Map<string, string>([
  ["538 Error: Must issue a STARTTLS command first", replies.authBeforeTls.text],
  ["421 Server shutting down", replies.shuttingDown.text],
]);

type Send = (code: number, data?: string | string[] | null, context?: string | false) => void;
type Connection = { secure: boolean; close(): void };

let installed = false;

export function installReplyCodes(): void {
  if (installed) return;
  installed = true;
  const prototype = SMTPConnection.prototype as unknown as { send: Send };
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
