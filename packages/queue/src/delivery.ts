import { Queue } from "bullmq";
import type { Redis } from "ioredis";

/** The queue of delivery work. Its jobs carry only the message id; PostgreSQL has the rest. */
export const deliveryQueueName = "delivery";

export interface DeliveryJob {
  messageId: string;
}

/** What a message needs to be queued for delivery. */
export interface DeliverableMessage {
  id: string;
  projectId: string;
}

/**
 * The producing side of delivery, used by the SMTP accept step, the sweeper and the API's retry.
 * Adding is idempotent: the job id is the message id, so adding a message that already has a
 * live job does nothing.
 */
export interface DeliveryProducer {
  enqueue(message: DeliverableMessage, options?: { delayMs?: number }): Promise<void>;
  close(): Promise<void>;
}

export function createDeliveryProducer(connection: Redis, prefix: string): DeliveryProducer {
  const queue = new Queue<DeliveryJob>(deliveryQueueName, { connection, prefix });
  return {
    async enqueue(message, options = {}) {
      await queue.add(
        "deliver",
        { messageId: message.id },
        { jobId: message.id, delay: options.delayMs ?? 0, removeOnComplete: true, removeOnFail: true },
      );
    },
    async close() {
      await queue.close();
    },
  };
}
