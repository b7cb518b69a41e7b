import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { type RunningService, startEmbeddedRedis } from "@postern/embedded";
import { Redis } from "ioredis";

const execFileAsync = promisify(execFile);

export interface RunningRedisCluster {
  /** A node's URL: with REDIS_CLUSTER, Postern finds the other nodes from it. */
  url: string;
  /** The nodes, each a master holding a third of the slots. */
  nodes: { port: number; url: string }[];
  stop(): Promise<void>;
}

/**
 * A real Redis Cluster on loopback, as an operator makes one: `nodeCount` ephemeral
 * `redis-server --cluster-enabled yes` nodes joined with `redis-cli --cluster create`, without
 * replicas. Resolves once every node reports `cluster_state:ok` (slots assigned and agreed on).
 */
export async function startRedisCluster(dir: string, nodeCount = 3): Promise<RunningRedisCluster> {
  const started = await Promise.allSettled(
    Array.from({ length: nodeCount }, (_, i) =>
      startEmbeddedRedis({ dir: join(dir, `node-${i}`), ephemeral: true, cluster: true }),
    ),
  );
  const running = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const stop = async () => {
    for (const node of running) await node.stop();
  };
  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    await execFileAsync(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...running.map((node: RunningService) => `127.0.0.1:${node.port}`),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
      ],
      { timeout: 60_000 },
    );
    await Promise.all(running.map((node) => untilClusterOk(node.url)));
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: running[0]?.url as string,
    nodes: running.map((node) => ({ port: node.port, url: node.url })),
    stop,
  };
}

/** `redis-cli --cluster create` returns once the nodes agree; each node then marks the state ok. */
async function untilClusterOk(url: string, timeoutMs = 30_000): Promise<void> {
  const node = new Redis(url, { lazyConnect: true });
  await node.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    while (!(await node.cluster("INFO")).includes("cluster_state:ok")) {
      if (Date.now() > deadline) throw new Error(`Redis Cluster node ${url} not ok after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    node.disconnect();
  }
}
