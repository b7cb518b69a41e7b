import { createRequire } from "node:module";
import type { Redis, RedisOptions } from "ioredis";

// ioredis is loaded by the first client made, not by importing this module: an operator command
// that never uses Redis (`postern project list`) does not pay for loading it.
const load = createRequire(import.meta.url);

/**
 * A Redis connection for BullMQ and the limiters. `maxRetriesPerRequest: null` is what BullMQ
 * workers require; producers on the SMTP path pass a finite value so that a dead Redis fails a
 * command quickly (451 4.3.0) instead of waiting forever.
 */
export function createRedis(url: string, options: RedisOptions = {}): Redis {
  const { Redis } = load("ioredis") as typeof import("ioredis");
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

/**
 * A Redis client made (ioredis loaded, the connection opened) when something first uses it: for
 * an operator command, whose services are all given a client but most of which never send a
 * command. `disconnect` closes the client if it was made.
 */
export function createRedisOnFirstUse(
  url: string,
  options: RedisOptions = {},
): { redis: Redis; disconnect(): void } {
  let client: Redis | undefined;
  const made = () => {
    client ??= createRedis(url, options);
    return client;
  };
  const redis = new Proxy({} as Redis, {
    get(_, property) {
      const value = Reflect.get(made(), property);
      return typeof value === "function" ? value.bind(client) : value;
    },
    has: (_, property) => Reflect.has(made(), property),
  });
  return { redis, disconnect: () => client?.disconnect() };
}

export type { Redis } from "ioredis";
