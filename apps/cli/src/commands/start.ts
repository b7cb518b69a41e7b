import { isMainThread } from "node:worker_threads";
import { type Command, Option } from "commander";
import { defaultRoles, probes, type RunningRole, roleNames, roles } from "../roles";
import { exitWithStartupError, openRuntime, type Runtime } from "../runtime";
import { mergedExposition, startWorkerThreads, superviseThisWorker } from "../worker-threads";

export interface StartOptions {
  /** Internal: this is a worker thread started by `postern start` (see worker-threads.ts). */
  supervised?: boolean;
}

export function registerStartCommand(program: Command): void {
  program
    .command("start")
    .description(`run the relay: every role, or only the named ones (${roleNames.join(", ")})`)
    .argument("[roles...]", "roles to run in this process")
    // Internal: a worker thread started by `postern start` (apps/cli/src/worker-threads.ts).
    .addOption(new Option("--supervised").hideHelp())
    .action((roles: string[], options: StartOptions) => startCommand(roles, options));
}

/**
 * `postern start [roles...]`: every role by default, or the named ones for scaling out. Run
 * beside other roles, the worker runs in WORKER_THREADS threads of its own. SIGINT/SIGTERM stop
 * gracefully (exit 0); a second signal exits at once (exit 1).
 */
export async function startCommand(requested: string[], options: StartOptions = {}): Promise<void> {
  if (options.supervised && isMainThread)
    exitWithStartupError(new Error("--supervised is internal to the worker threads of `postern start`"));
  const unknown = requested.filter((role) => !roleNames.includes(role));
  if (unknown.length > 0)
    exitWithStartupError(new Error(`unknown role ${unknown.join(", ")} (roles: ${roleNames.join(", ")})`));
  const named = requested.length > 0 ? roleNames.filter((r) => requested.includes(r)) : undefined;

  let runtime: Runtime;
  try {
    runtime = await openRuntime({
      attach: false,
      workerOnly: named?.length === 1 && named[0] === "worker",
      onAdminTokenGenerated: (token) =>
        process.stdout.write(
          `\nGenerated the operator token (ADMIN_TOKEN), shown once; it is kept in DATA_DIR/secrets/admin-token:\n  ${token}\n\n`,
        ),
    });
  } catch (error) {
    exitWithStartupError(error);
  }
  // `postern start inbound` without BOUNCE_DOMAIN stops with startInbound's one line.
  const selected = named ?? defaultRoles(runtime.config);
  const runWorkerInThreads =
    !options.supervised &&
    selected.includes("worker") &&
    selected.length > 1 &&
    runtime.config.delivery.workerThreads > 0;

  // The API starts before the workers; its /metrics asks them once they run.
  let workerMetrics: Parameters<typeof mergedExposition>[1] = async () => [];
  if (runWorkerInThreads) runtime.metricsExposition = mergedExposition(runtime, () => workerMetrics());

  const running: { name: string; role: RunningRole }[] = [];
  let stopping = false;
  // /health/ready is 503 until the last role serves (the API starts first, SMTP last) and from
  // the first signal on, so that a load balancer never sends to a port that does not accept.
  const serving = new Map<string, () => string>(selected.map((name) => [name, () => "starting"]));
  runtime.roleReadiness = () =>
    Object.fromEntries([...serving].map(([name, state]) => [name, stopping ? "stopping" : state()]));
  const stop = async (signal: string) => {
    if (stopping) {
      runtime.log.warn({ signal }, "second signal: exiting without waiting");
      process.exit(1);
    }
    stopping = true;
    runtime.log.info({ signal }, "shutting down");
    for (const { name, role } of [...running].reverse()) {
      await role
        .stop()
        .catch((error: Error) => runtime.log.error({ err: error, role: name }, "role did not stop cleanly"));
    }
    await runtime.close();
    runtime.log.info("stopped");
    process.exit(0);
  };
  // A worker thread takes its stop requests from superviseThisWorker instead.
  if (!options.supervised) {
    process.on("SIGINT", () => void stop("SIGINT"));
    process.on("SIGTERM", () => void stop("SIGTERM"));
  }

  try {
    if (!selected.includes("api") && !options.supervised) {
      running.push({ name: "probes", role: await probes(runtime) });
    }
    for (const name of selected) {
      let role: RunningRole;
      if (name === "worker" && runWorkerInThreads) {
        const workers = await startWorkerThreads(runtime, runtime.config.delivery.workerThreads);
        workerMetrics = workers.metricsJson;
        role = workers;
      } else {
        const starter = roles[name];
        if (!starter) continue;
        role = await starter(runtime);
      }
      running.push({ name, role });
      serving.set(name, () => role.serving?.() ?? "ok");
    }
  } catch (error) {
    for (const { role } of running.reverse()) await role.stop().catch(() => {});
    await runtime.close();
    exitWithStartupError(error);
  }

  if (options.supervised) {
    const worker = running[0];
    if (worker) superviseThisWorker(runtime, worker.role, (reason) => void stop(reason));
    return;
  }
  const { services } = runtime;
  const lines = [
    `Postern is running (${selected.join(", ")}), pid ${process.pid}`,
    ...running.flatMap(({ role }) => role.describe.map((line) => `  ${line}`)),
    `  PostgreSQL ${services.started.includes("postgres") ? "embedded, data in DATA_DIR" : "from DATABASE_URL"}`,
    `  Redis      ${services.started.includes("redis") ? "embedded, data in DATA_DIR" : runtime.config.redisCluster ? "a cluster, from REDIS_URL" : "from REDIS_URL"}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}
