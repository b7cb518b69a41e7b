export {
  type AcceptOutcome,
  type Acceptor,
  type AcceptorOptions,
  createAcceptor,
  type MessageToAccept,
} from "./accept";
export { type RejectionReason, replies } from "./replies";
export { type RunningSmtp, type SmtpDeps, type SmtpListenOverrides, startSmtp } from "./server";
