export { retryDelayMs } from "./backoff";
export {
  createDeliveryProducer,
  createDeliveryQueue,
  createDeliveryWorker,
  type DeliverableMessage,
  type DeliveryJob,
  type DeliveryJobResult,
  type DeliveryProducer,
  type DeliveryWorkerOptions,
  deliveryJobOptions,
  deliveryQueueName,
  type PlannedDeliveryJob,
  planDeliveryJobs,
  type RetryOptions,
  type SingleDeliveryJob,
} from "./delivery";
export {
  type BacklogLedger,
  backlogKey,
  countQueuedMessages,
  createBacklogLedger,
  enterBacklog,
  lastPriorityKey,
  resetBacklog,
} from "./fairness";
export { countQueuedMessagesByProject } from "./queued-by-project";
export { createRedis, failFastRedis, keyFamily, queuePrefix, type Redis } from "./redis";
