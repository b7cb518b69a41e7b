export {
  type AcceptOutcome,
  type Acceptor,
  type AcceptorOptions,
  createAcceptor,
  type MessageToAccept,
  type Submitter,
} from "./accept";
export { type ConnectionGateOptions, createConnectionGate } from "./connection-gate";
export {
  type HeaderSummary,
  httpReceivedHeader,
  isMailbox,
  observeContent,
  readMessageData,
  summariseHeaders,
} from "./message";
export { type RejectionReason, replies, type SmtpReply, smtpError } from "./replies";
export { checkHeaderFrom, type HeaderFromRefusal, senderDomainAllowed } from "./sender-policy";
export { type RunningSmtp, type SmtpDeps, type SmtpListenOverrides, startSmtp } from "./server";
