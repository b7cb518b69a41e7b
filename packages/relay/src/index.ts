export { type Admission, UpstreamCircuits, type UpstreamCircuitsOptions } from "./circuit";
export {
  type DeliveryOutcome,
  outcomeOfReplyCode,
  parseReply,
  type SmtpClientError,
  type UpstreamVerdict,
  verdictOfError,
  verdictOfReply,
} from "./classify";
export { type MxAnswer, MxResolver, type MxResolverOptions } from "./mx";
export {
  type ConnectionBusy,
  type ProjectUpstream,
  type RecipientVerdict,
  type RelayEnvelope,
  type RelayResult,
  UpstreamTransports,
  type UpstreamTransportsOptions,
} from "./transports";
export { type ParsedUpstreamUrl, parseUpstreamUrl, type Upstream, UpstreamUrlError } from "./upstream";
