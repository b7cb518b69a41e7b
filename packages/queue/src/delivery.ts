import { Queue, type QueueOptions } from "bullmq";
import type { Redis } from "ioredis";

/** The one queue of delivery work. Its jobs carry only the message id; PostgreSQL has the rest. */
export const deliveryQueueName = "delivery";

export interface DeliveryJob {
  messageId: string;
}

export function createDeliveryQueue(
  connection: Redis,
  prefix: string,
  options: Partial<QueueOptions> = {},
): Queue<DeliveryJob> {
  return new Queue<DeliveryJob>(deliveryQueueName, { connection, prefix, ...options });
}

/**
 * Adds the delivery job of an accepted message. jobId = message id makes it idempotent: the
 * sweeper and a retry may add it again without creating a second delivery while one exists.
 */
export function enqueueDelivery(queue: Queue<DeliveryJob>, messageId: string, delayMs = 0) {
  return queue.add(
    "deliver",
    { messageId },
    { jobId: messageId, delay: delayMs, removeOnComplete: true, removeOnFail: true },
  );
}
