import type { Runtime } from "./runtime";

export interface RunningRole {
  /** Human-readable lines: where it listens, what it does. */
  describe: string[];
  /** Stops taking new work, finishes in-flight work within SHUTDOWN_TIMEOUT, releases resources. */
  stop(): Promise<void>;
  /** "ok" while the role serves, else why not; a role without it serves from start to stop. */
  serving?(): string;
}

type RoleStarter = (runtime: Runtime) => Promise<RunningRole>;

/**
 * The roles `postern start` can run, in start order: the API (health probes) first, then the
 * workers, then the SMTP front end, when what it hands work to is running, and the inbound role
 * (bounces and complaints, docs/bounces.md). Shutdown runs in reverse: SMTP stops accepting
 * first, workers finish their deliveries, the API goes last.
 */
export const roles: Record<string, RoleStarter> = {
  api: async (runtime) => {
    const { startApi } = await import("@postern/api");
    const api = await startApi(runtime);
    return {
      describe: [
        `API      ${api.address}  (docs at ${api.address}/docs)`,
        ...(runtime.config.databaseReplicaUrl ? ["         history reads from DATABASE_REPLICA_URL"] : []),
      ],
      stop: api.stop,
    };
  },
  worker: async (runtime) => {
    const { startWorker } = await import("@postern/worker");
    return startWorker(runtime);
  },
  smtp: async (runtime) => {
    const { startSmtp } = await import("@postern/smtp");
    return startSmtp(runtime);
  },
  inbound: async (runtime) => {
    const { startInbound } = await import("@postern/inbound");
    return startInbound(runtime);
  },
};

export const roleNames = Object.keys(roles);

/** What `postern start` (and `npm start`) runs without naming roles: all, the inbound role only with BOUNCE_DOMAIN. */
export function defaultRoles(config: { bounces: { domain: string | undefined } }): string[] {
  return roleNames.filter((role) => role !== "inbound" || config.bounces.domain !== undefined);
}

/** Health probes and metrics for a process that runs no API (see apps/api/src/probes.ts). */
export const probes: RoleStarter = async (runtime) => {
  const { startProbes } = await import("@postern/api");
  const server = await startProbes(runtime);
  return {
    describe: [`Probes   ${server.address}/health/ready, ${server.address}/metrics`],
    stop: server.stop,
  };
};
