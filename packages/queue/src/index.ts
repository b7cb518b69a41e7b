export { retryDelayMs } from "./backoff";
export {
  countWaitingDeliveries,
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
} from "./delivery";
export {
  type BacklogLedger,
  backlogKey,
  createBacklogLedger,
  enterBacklog,
  lastPriorityKey,
  resetBacklog,
} from "./fairness";
export { createRedis, type Redis } from "./redis";
