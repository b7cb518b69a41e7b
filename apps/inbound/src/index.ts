export { type IgnoredReason, type ReceiveOutcome, receiveReport, type UnmatchedReason } from "./receive";
export { inboundReplies } from "./replies";
export { type DeliveryStatusReport, type FeedbackReport, type Report, readReport } from "./reports";
export { type InboundDeps, type RunningInbound, startInbound } from "./server";
