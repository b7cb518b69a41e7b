import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { type DeliverableMessage, type DeliveryJob, deliveryQueueName } from "./delivery";

/**
 * For an operator's or owner's "retry now": a deferred message usually still has its delayed job
 * (same job id), to which a plain `add` would do nothing, so that job is promoted to run at once.
 * A message without a job gets one, as the producer would add it.
 */
export interface DeliveryScheduler {
  deliverNow(message: DeliverableMessage): Promise<void>;
  close(): Promise<void>;
}

export function createDeliveryScheduler(connection: Redis, prefix: string): DeliveryScheduler {
  const queue = new Queue<DeliveryJob>(deliveryQueueName, { connection, prefix });
  return {
    async deliverNow(message) {
      const job = await queue.getJob(message.id);
      if (job) {
        const state = await job.getState();
        if (state === "delayed") return job.promote();
        if (state === "waiting" || state === "active" || state === "prioritized") return;
        // completed or failed but kept: the id is taken until the old job is gone.
        await job.remove();
      }
      await queue.add(
        "deliver",
        { messageId: message.id },
        { jobId: message.id, removeOnComplete: true, removeOnFail: true },
      );
    },
    async close() {
      await queue.close();
    },
  };
}
