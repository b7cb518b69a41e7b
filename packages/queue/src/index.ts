export { createDeliveryQueue, type DeliveryJob, deliveryQueueName, enqueueDelivery } from "./delivery";
export { createRedis, type Redis } from "./redis";
