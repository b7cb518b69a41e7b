import type { Runtime } from "./runtime";

export interface RunningRole {
  /** Human-readable lines: where it listens, what it does. */
  describe: string[];
  /** Stops taking new work, finishes in-flight work within SHUTDOWN_TIMEOUT, releases resources. */
  stop(): Promise<void>;
}

type RoleStarter = (runtime: Runtime) => Promise<RunningRole>;

/**
 * The roles `postern start` can run, in start order. Shutdown runs in reverse, so the API (and its
 * health probes) go last and the SMTP front end stops accepting before anything else stops.
 */
export const roles: Record<string, RoleStarter> = {
  worker: async (runtime) => {
    const { startWorker } = await import("@postern/worker");
    return startWorker(runtime);
  },
  api: async (runtime) => {
    const { startApi } = await import("@postern/api");
    const api = await startApi(runtime);
    return { describe: [`API      ${api.address}  (docs at ${api.address}/docs)`], stop: api.stop };
  },
};

export const roleNames = Object.keys(roles);
