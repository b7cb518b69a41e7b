export { TestCertificateAuthority } from "./certificate-authority";
export { createTestContext, type TestContext } from "./context";
export { TestDnsServer } from "./dns-server";
export {
  createCredentialFixture,
  createProjectFixture,
  type ProjectFixture,
  type ProjectFixtureInput,
} from "./factories";
export { type CapturedLog, captureLog } from "./log-capture";
export { createQueuedMessageFixture, type QueuedMessageInput } from "./messages";
export { type RunningRedisCluster, startRedisCluster } from "./redis-cluster";
export { type StreamingReplica, startStreamingReplica } from "./replication";
export { type ReceivedMessage, type SinkReply, SmtpSink, type SmtpSinkOptions } from "./smtp-sink";
export {
  type ReceivedWebhook,
  type ReceiverAnswer,
  WebhookReceiver,
} from "./webhook-receiver";
