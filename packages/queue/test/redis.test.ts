import { createRedis } from "@postern/queue";
import { Cluster } from "ioredis";
import { describe, expect, it } from "vitest";

/** How REDIS_URL becomes a cluster connection (apps/worker/test/redis-cluster.test.ts runs one). */
describe("createRedis with cluster", () => {
  it("gives the URL's credentials and TLS to every node", () => {
    const redis = createRedis("rediss://postern:p%40ss@[::1]:7000", { cluster: true, lazyConnect: true });
    try {
      expect(redis).toBeInstanceOf(Cluster);
      const cluster = redis as Cluster;
      expect(cluster.options.redisOptions).toMatchObject({
        username: "postern",
        password: "p@ss",
        tls: {},
        maxRetriesPerRequest: null,
      });
      expect(cluster.options.dnsLookup).toBeTypeOf("function");
    } finally {
      redis.disconnect();
    }
  });

  it("leaves a plain URL without credentials or TLS", () => {
    const redis = createRedis("redis://node-1.internal", { cluster: true, lazyConnect: true }) as Cluster;
    try {
      expect(redis.options.redisOptions).toMatchObject({ username: undefined, password: undefined });
      expect(redis.options.redisOptions?.tls).toBeUndefined();
    } finally {
      redis.disconnect();
    }
  });
});
