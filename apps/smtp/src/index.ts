export { type RejectionReason, type ReplyName, replies } from "./replies";
export { type RunningSmtp, type SmtpDeps, type SmtpListenOverrides, startSmtp } from "./server";
