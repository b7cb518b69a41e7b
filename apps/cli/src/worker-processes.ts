import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import type { RunningRole } from "./roles";
import type { Runtime } from "./runtime";

/**
 * `postern start` runs the delivery worker in child processes when it runs it beside other roles:
 * Node runs JavaScript on one core, and SMTP sessions and deliveries each need one. The children
 * stay in Postern's process group (Ctrl-C and `kill -9` of the group reach them), share its
 * PostgreSQL and Redis, and answer over IPC: ready, metrics, stop.
 */

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Messages from `postern start` to a supervised worker process. */
export type ToWorker = { type: "stop" } | { type: "metrics"; id: number };
/** Messages from a supervised worker process. */
export type FromWorker =
  | { type: "ready"; describe: string[] }
  | { type: "metrics"; id: number; metrics: MetricsJson };

// Run from the sources, this module forks the tsx launcher; inside the bundle (dist/postern.mjs,
// scripts/bundle.mjs), the bundle itself.
const self = fileURLToPath(import.meta.url);
const bin = self.endsWith(".ts") ? fileURLToPath(new URL("../bin/postern.js", import.meta.url)) : self;
const restartDelayMs = 1000;

interface Child {
  process: ChildProcess;
  pending: Map<number, (metrics: MetricsJson) => void>;
}

export async function startWorkerProcesses(
  runtime: Runtime,
  count: number,
): Promise<RunningRole & { metricsJson(): Promise<MetricsJson[]> }> {
  const { config, log } = runtime;
  // The children use the services this process provides (embedded or configured) and its secrets.
  const env = {
    ...process.env,
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    ENCRYPTION_KEY: config.encryptionKey.toString("hex"),
    ADMIN_TOKEN: config.adminToken,
  };
  let stopping = false;
  let nextRequest = 0;
  const children: Child[] = [];

  const spawnChild = (slot: number): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const child: Child = {
        process: fork(bin, ["start", "worker", "--supervised"], { env, stdio: "inherit" }),
        pending: new Map(),
      };
      children[slot] = child;
      let ready = false;
      child.process.on("message", (message: FromWorker) => {
        if (message.type === "ready") {
          ready = true;
          resolve(message.describe);
        }
        if (message.type === "metrics") {
          child.pending.get(message.id)?.(message.metrics);
          child.pending.delete(message.id);
        }
      });
      child.process.on("exit", (code, signal) => {
        for (const answer of child.pending.values()) answer([]);
        if (stopping) return;
        if (!ready)
          return reject(new Error(`worker process exited during start (code ${code}, signal ${signal})`));
        // A worker that dies is replaced: its jobs are picked up again as stalled jobs.
        log.error({ code, signal, pid: child.process.pid }, "worker process exited; starting another");
        setTimeout(() => {
          if (!stopping)
            spawnChild(slot).catch((error: Error) => log.error({ err: error }, "worker restart failed"));
        }, restartDelayMs);
      });
    });

  const described = await Promise.all(Array.from({ length: count }, (_, slot) => spawnChild(slot)));
  const pids = children.map((c) => c.process.pid).join(", ");

  return {
    describe: [
      `worker   ${count} process${count > 1 ? "es" : ""} (pid ${pids}): ${described[0]?.[0]?.replace(/^worker\s+/, "") ?? ""}`,
    ],
    async metricsJson() {
      return Promise.all(
        children.map(
          (child) =>
            new Promise<MetricsJson>((resolve) => {
              if (!child.process.connected) return resolve([]);
              const id = nextRequest++;
              child.pending.set(id, resolve);
              child.process.send({ type: "metrics", id } satisfies ToWorker);
              // A busy or dying child must not hang /metrics.
              setTimeout(() => {
                if (child.pending.delete(id)) resolve([]);
              }, 2000);
            }),
        ),
      );
    },
    async stop() {
      stopping = true;
      await Promise.all(
        children.map(async (child) => {
          if (child.process.exitCode !== null || child.process.signalCode !== null) return;
          const exited = new Promise((resolve) => child.process.once("exit", resolve));
          if (child.process.connected) child.process.send({ type: "stop" } satisfies ToWorker);
          else child.process.kill("SIGTERM");
          const timer = setTimeout(() => child.process.kill("SIGKILL"), config.shutdownTimeoutMs + 5000);
          await exited;
          clearTimeout(timer);
        }),
      );
    },
  };
}

/** /metrics of this process with the worker processes' registries merged in (counters summed). */
export function mergedExposition(
  runtime: Runtime,
  children: () => Promise<MetricsJson[]>,
): { contentType: string; metrics(): Promise<string> } {
  return {
    contentType: runtime.metrics.contentType,
    async metrics() {
      const own = (await runtime.metrics.getMetricsAsJSON()) as MetricsJson;
      const others = (await children()).filter((m) => m.length > 0);
      return AggregatorRegistry.aggregate([own, ...others]).metrics();
    },
  };
}

/**
 * The child's side: `postern start worker --supervised`. It leaves Ctrl-C to its parent (which
 * stops SMTP first, then asks it to stop), stops on `stop`, SIGTERM, or when the parent is gone.
 * These often come together (systemd signals the whole group, then the parent asks and exits):
 * the first starts a graceful stop and the others do not cut it short.
 */
export function superviseThisWorker(
  runtime: Runtime,
  role: RunningRole,
  stop: (reason: string) => void,
): void {
  let stopping = false;
  const stopOnce = (reason: string) => {
    if (stopping) return;
    stopping = true;
    stop(reason);
  };
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => stopOnce("SIGTERM"));
  process.on("message", async (message: ToWorker) => {
    if (message.type === "stop") stopOnce("parent");
    if (message.type === "metrics") {
      const metrics = (await runtime.metrics.getMetricsAsJSON()) as MetricsJson;
      process.send?.({ type: "metrics", id: message.id, metrics } satisfies FromWorker);
    }
  });
  process.on("disconnect", () => stopOnce("parent gone"));
  process.send?.({ type: "ready", describe: role.describe } satisfies FromWorker);
}
