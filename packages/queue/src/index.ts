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
} from "./delivery";
export { backlogKey, leaveBacklog, priorityFromBacklog, resetBacklog } from "./fairness";
export { createRedis, type Redis } from "./redis";
