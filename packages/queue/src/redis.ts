import { createRequire } from "node:module";
import type { Cluster, RedisOptions, Redis as RedisServer } from "ioredis";

/** A connection to Redis: one server, or a Redis Cluster (REDIS_CLUSTER). */
export type Redis = RedisServer | Cluster;

// ioredis is loaded by the first client made, not by importing this module: an operator command
// that never uses Redis (`postern project list`) does not pay for loading it.
const load = createRequire(import.meta.url);
const ioredis = () => load("ioredis") as typeof import("ioredis");

/**
 * A Redis connection for BullMQ and the limiters. `maxRetriesPerRequest: null` is what BullMQ
 * workers require; the SMTP reply path takes a copy that fails fast instead (`failFastRedis`).
 *
 * `cluster`: `url` is one node of a Redis Cluster; ioredis asks it for the others (CLUSTER SLOTS)
 * and sends each command to the node that holds its key's slot. The URL's credentials and TLS
 * (`rediss:`) apply to every node, as they do in a cluster.
 */
export function createRedis(url: string, options?: RedisOptions & { cluster?: false }): RedisServer;
export function createRedis(url: string, options: RedisOptions & { cluster: boolean }): Redis;
export function createRedis(url: string, options: RedisOptions & { cluster?: boolean } = {}): Redis {
  const { cluster, ...overrides } = options;
  const nodeOptions: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    lazyConnect: false,
    ...overrides,
  };
  const redis = cluster ? createCluster(url, nodeOptions) : new (ioredis().Redis)(url, nodeOptions);
  // ioredis reconnects by itself; meanwhile commands fail (callers handle that) and /health/ready
  // reports it. Without a listener every failed reconnect would print "Unhandled error event".
  redis.on("error", () => {});
  return redis;
}

function createCluster(url: string, nodeOptions: RedisOptions): Cluster {
  const parsed = new URL(url);
  const tls = parsed.protocol === "rediss:";
  // An IPv6 address comes bracketed in a URL, and bare to ioredis.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  return new (ioredis().Cluster)([{ host, port: Number(parsed.port || 6379) }], {
    enableReadyCheck: true,
    lazyConnect: nodeOptions.lazyConnect,
    // With TLS, connect to the names the cluster announces, not to addresses resolved from them,
    // so that each node's certificate is checked against its name (ioredis's advice for TLS
    // clusters such as ElastiCache's).
    ...(tls
      ? {
          dnsLookup: (address: string, callback: (error: null, address: string) => void) =>
            callback(null, address),
        }
      : {}),
    redisOptions: {
      ...nodeOptions,
      username: decodeURIComponent(parsed.username) || undefined,
      password: decodeURIComponent(parsed.password) || undefined,
      ...(tls ? { tls: {} } : {}),
    },
  });
}

/**
 * Another connection to the same Redis whose commands fail within about `timeoutMs` when Redis
 * does not answer (the SMTP reply path: a dead Redis must become a 451 in bounded time, where the
 * shared connection retries forever for BullMQ). One server: one retry, then a command timeout.
 * A cluster queues commands while it has no node for their slot (all nodes down, a failover)
 * and no timeout applies there, so its copy has no offline queue: such a command fails at once.
 * Without that queue a command sent before the cluster is ready would fail too: resolves once it
 * is ready.
 */
export async function failFastRedis(redis: Redis, timeoutMs: number): Promise<Redis> {
  const nodeOptions = { maxRetriesPerRequest: 1, commandTimeout: timeoutMs };
  if (!redis.isCluster) return (redis as RedisServer).duplicate(nodeOptions);
  const copy = (redis as Cluster).duplicate([], {
    enableOfflineQueue: false,
    redisOptions: { ...(redis as Cluster).options.redisOptions, ...nodeOptions },
  });
  // Errors while it connects (a node not up yet) are retried as on any connection; `once` would
  // take the first as a failure, and an "error" without a listener would throw.
  copy.on("error", () => {});
  if (copy.status !== "ready") await new Promise((resolve) => copy.once("ready", resolve));
  return copy;
}

/**
 * Where the keys of one family (the delivery queue's, the throttle's) start: `prefix:family`. On a
 * Redis Cluster the family is a hash tag, `{prefix:family}`, so that every key of the family hashes
 * to one slot: a Lua script or a MULTI may only touch keys of one slot, and the family's scripts
 * take several of its keys at once. Different families land on different slots, so the cluster
 * spreads them over its nodes. On one server the keys stay as they always were.
 */
export function keyFamily(redis: Redis, prefix: string, family: string): string {
  return redis.isCluster ? `{${prefix}:${family}}` : `${prefix}:${family}`;
}

/**
 * The BullMQ prefix of the queue `queueName`. BullMQ names its keys `prefix:queue:...` and its
 * scripts take several of them at once, so on a cluster the prefix carries the queue's hash tag
 * (BullMQ's own advice), one slot per queue; on one server it is the key prefix, unchanged.
 */
export function queuePrefix(redis: Redis, prefix: string, queueName: string): string {
  return redis.isCluster ? keyFamily(redis, prefix, queueName) : prefix;
}

/**
 * A Redis client made (ioredis loaded, the connection opened) when something first uses it: for
 * an operator command, whose services are all given a client but most of which never send a
 * command. `disconnect` closes the client if it was made.
 */
export function createRedisOnFirstUse(
  url: string,
  options: RedisOptions & { cluster: boolean },
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
