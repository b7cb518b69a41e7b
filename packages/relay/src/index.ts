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
export { MtaStsPolicies, type MtaStsVerdict } from "./mta-sts";
export { type MxAnswer, MxResolver, type MxResolverOptions } from "./mx";
export {
  type DestinationAdmission,
  type DestinationLease,
  type DestinationLimits,
  type DestinationSignal,
  DestinationThrottle,
  type DestinationThrottleOptions,
  signalOf,
} from "./throttle";
export {
  type ConnectionBusy,
  type ProjectUpstream,
  type RecipientVerdict,
  type RelayEnvelope,
  type RelayResult,
  type SessionSettings,
  UpstreamTransports,
  type UpstreamTransportsOptions,
} from "./transports";
export { type ParsedUpstreamUrl, parseUpstreamUrl, type Upstream, UpstreamUrlError } from "./upstream";
