import type { SmtpReply } from "@postern/smtp";

/**
 * Every reply of the inbound role, in one table (docs/smtp.md, "The inbound role"). The enhanced
 * status code leads the text, as on the submission port (smtp-server's own guess is suppressed by
 * @postern/smtp's protocol adapter).
 */
export const inboundReplies = {
  // Not BOUNCE_DOMAIN: this is no open relay (RFC 5321 3.6.2).
  relayDenied: {
    code: 550,
    text: "5.7.1 Relaying denied: this server takes mail for its bounce domain only",
  },
  // `bounce+<token>` whose token this installation did not make: nobody may report on mail we sent.
  forgedReturnPath: { code: 550, text: "5.7.1 Return path not issued by this server" },
  // An authentic token whose message is gone (its project was deleted): nothing to report on.
  unknownMessage: { code: 550, text: "5.1.1 Return path names no message kept here" },
  noSuchMailbox: { code: 550, text: "5.1.1 No such mailbox" },
  // A report is about one message; another return path goes in a transaction of its own.
  oneReturnPath: { code: 452, text: "4.5.3 One return path per message, send the others separately" },
  messageTooBig: { code: 552, text: "5.3.4 Message too big" },
  // The report names a recipient whose delivery is not recorded yet (the report raced the record):
  // the reporting MTA retries later, and then it is.
  deliveryNotRecorded: { code: 451, text: "4.3.0 Delivery not recorded yet, try again later" },
  storeUnavailable: { code: 451, text: "4.3.0 Temporary local problem, try again later" },
  shuttingDown: { code: 421, text: "4.3.2 Service shutting down, try again later" },
  reportRecorded: { code: 250, text: "2.0.0 Ok: report recorded" },
  // Unmatched mail is audited (inbound.unmatched) before this: accepted, never lost in silence.
  keptForOperator: { code: 250, text: "2.0.0 Ok: not matched to a message, kept for the operator" },
} as const satisfies Record<string, SmtpReply>;
