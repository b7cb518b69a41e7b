import { Redis, type RedisOptions } from "ioredis";

/**
 * A Redis connection for BullMQ and the limiters. `maxRetriesPerRequest: null` is what BullMQ
 * workers require; producers on the SMTP path pass a finite value so that a dead Redis fails a
 * command quickly (451 4.3.0) instead of waiting forever.
 */
export function createRedis(url: string, options: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    lazyConnect: false,
    ...options,
  });
  // ioredis reconnects by itself; meanwhile commands fail (callers handle that) and /health/ready
  // reports it. Without a listener every failed reconnect would print "Unhandled error event".
  redis.on("error", () => {});
  return redis;
}

export type { Redis } from "ioredis";
