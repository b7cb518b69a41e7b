import { parentPort, Worker } from "node:worker_threads";
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import type { RunningRole } from "./roles";
import type { Runtime } from "./runtime";

/**
 * `postern start` runs the delivery worker in threads of its own when it runs it beside other
 * roles: Node runs JavaScript on one core per thread, and SMTP sessions and deliveries each need
 * one. Threads rather than child processes, because one process carries Node's code, its
 * libraries and its allocator once: less memory at rest than two processes (docs/architecture.md).
 * Each thread has its own event loop, heap and connections to PostgreSQL and Redis, and answers
 * over its message port: ready, metrics, stop. A thread that dies (an uncaught error) is
 * replaced; its jobs are picked up again as stalled jobs.
 */

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Messages from `postern start` to a worker thread. */
export type ToWorker = { type: "stop" } | { type: "metrics"; id: number };
/** Messages from a worker thread. */
export type FromWorker =
  | { type: "ready"; describe: string[] }
  | { type: "metrics"; id: number; metrics: MetricsJson };

// A thread runs the same program as the process, from the same file: the bundle's entry
// (dist/postern.mjs, directly or through bin/postern.js), or the sources through
// bin/postern-sources.js. Node gives that file's absolute path as argv[1].
const entry = process.argv[1] as string;
const restartDelayMs = 1000;

interface Thread {
  worker: Worker;
  /** It has started its worker and takes jobs. */
  ready: boolean;
  exited: boolean;
  pending: Map<number, (metrics: MetricsJson) => void>;
}

export async function startWorkerThreads(
  runtime: Runtime,
  count: number,
): Promise<RunningRole & { metricsJson(): Promise<MetricsJson[]> }> {
  const { config, log } = runtime;
  // The threads use the services this process provides (embedded or configured) and its secrets.
  const env = {
    ...process.env,
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    ENCRYPTION_KEY: config.encryptionKey.toString("hex"),
    ADMIN_TOKEN: config.adminToken,
  };
  let stopping = false;
  let nextRequest = 0;
  const threads: Thread[] = [];

  const startThread = (slot: number): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const thread: Thread = {
        worker: new Worker(entry, { argv: ["start", "worker", "--supervised"], env }),
        ready: false,
        exited: false,
        pending: new Map(),
      };
      threads[slot] = thread;
      let failure: Error | undefined;
      thread.worker.on("message", (message: FromWorker) => {
        if (message.type === "ready") {
          thread.ready = true;
          resolve(message.describe);
        }
        if (message.type === "metrics") {
          thread.pending.get(message.id)?.(message.metrics);
          thread.pending.delete(message.id);
        }
      });
      // An uncaught error in the thread, or its heap exhausted: 'exit' follows.
      thread.worker.on("error", (error) => {
        failure = error;
      });
      thread.worker.on("exit", (code) => {
        thread.exited = true;
        for (const answer of thread.pending.values()) answer([]);
        if (stopping) return;
        if (!thread.ready) {
          const reason = failure ? `: ${failure.message}` : ` with code ${code}`;
          return reject(new Error(`worker thread exited during start${reason}`));
        }
        log.error({ code, err: failure }, "worker thread exited; starting another");
        setTimeout(() => {
          if (!stopping)
            startThread(slot).catch((error: Error) => log.error({ err: error }, "worker restart failed"));
        }, restartDelayMs);
      });
    });

  const described = await Promise.all(Array.from({ length: count }, (_, slot) => startThread(slot)));

  return {
    describe: [
      `worker   ${count} thread${count > 1 ? "s" : ""}: ${described[0]?.[0]?.replace(/^worker\s+/, "") ?? ""}`,
    ],
    serving() {
      const notServing = threads.filter((thread) => thread.exited || !thread.ready).length;
      return notServing === 0 ? "ok" : `${notServing} of ${count} worker threads restarting`;
    },
    async metricsJson() {
      return Promise.all(
        threads.map(
          (thread) =>
            new Promise<MetricsJson>((resolve) => {
              if (thread.exited) return resolve([]);
              const id = nextRequest++;
              thread.pending.set(id, resolve);
              thread.worker.postMessage({ type: "metrics", id } satisfies ToWorker);
              // A busy or dying thread must not hang /metrics.
              setTimeout(() => {
                if (thread.pending.delete(id)) resolve([]);
              }, 2000);
            }),
        ),
      );
    },
    async stop() {
      stopping = true;
      await Promise.all(
        threads.map(async (thread) => {
          if (thread.exited) return;
          const exited = new Promise((resolve) => thread.worker.once("exit", resolve));
          thread.worker.postMessage({ type: "stop" } satisfies ToWorker);
          // The thread finishes its deliveries within SHUTDOWN_TIMEOUT; past that it is cut off.
          const timer = setTimeout(() => void thread.worker.terminate(), config.shutdownTimeoutMs + 5000);
          await exited;
          clearTimeout(timer);
        }),
      );
    },
  };
}

/** /metrics of this thread with the worker threads' registries merged in (counters summed). */
export function mergedExposition(
  runtime: Runtime,
  threads: () => Promise<MetricsJson[]>,
): { contentType: string; metrics(): Promise<string> } {
  return {
    contentType: runtime.metrics.contentType,
    async metrics() {
      const own = (await runtime.metrics.getMetricsAsJSON()) as MetricsJson;
      const others = (await threads()).filter((m) => m.length > 0);
      return AggregatorRegistry.aggregate([own, ...others]).metrics();
    },
  };
}

/**
 * The thread's side: `postern start worker --supervised` run by startWorkerThreads. Signals go to
 * the main thread, which stops SMTP first and then asks each worker thread to stop.
 */
export function superviseThisWorker(
  runtime: Runtime,
  role: RunningRole,
  stop: (reason: string) => void,
): void {
  const port = parentPort;
  if (!port) throw new Error("--supervised is for worker threads started by `postern start`");
  let stopping = false;
  port.on("message", async (message: ToWorker) => {
    if (message.type === "stop" && !stopping) {
      stopping = true;
      stop("main thread");
    }
    if (message.type === "metrics") {
      const metrics = (await runtime.metrics.getMetricsAsJSON()) as MetricsJson;
      port.postMessage({ type: "metrics", id: message.id, metrics } satisfies FromWorker);
    }
  });
  port.postMessage({ type: "ready", describe: role.describe } satisfies FromWorker);
}
