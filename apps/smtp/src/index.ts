export { type RejectionReason, replies } from "./replies";
export { type RunningSmtp, type SmtpDeps, type SmtpListenOverrides, startSmtp } from "./server";
