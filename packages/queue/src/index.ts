export { createDeliveryScheduler, type DeliveryScheduler } from "./deliver-now";
export {
  createDeliveryProducer,
  type DeliverableMessage,
  type DeliveryJob,
  type DeliveryProducer,
  deliveryQueueName,
} from "./delivery";
export { createRedis, type Redis } from "./redis";
