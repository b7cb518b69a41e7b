import { createDatabase, sqlPoolOf } from "@postern/db";
import { type ApiDependencies, buildApi } from "./app";
import { scheduleIdempotencyPruning } from "./idempotency";
import { scheduleStatsCompaction } from "./stats-compaction";

export {
  type ApiDependencies,
  buildApi,
  type QuotaProject,
  type QuotaUsage,
  type RouteDependencies,
} from "./app";
export { ApiError, type ApiErrorCode, apiErrors } from "./errors";
export { apiErrorTable, errorTableEnd, errorTableStart, withApiErrorTable } from "./errors-doc";
export { pruneIdempotencyKeys } from "./idempotency";
export { compactMessageStats } from "./stats-compaction";

/**
 * A replica that takes connections and never answers (a host gone from the network, a server
 * stuck in recovery) is reported as down after this long, not waited out by every read.
 */
const replicaConnectTimeoutMs = 5000;

/**
 * The API role: listens on HTTP_HOST:HTTP_PORT until stopped. With DATABASE_REPLICA_URL (and no
 * `replica` given) it opens its own pool to the replica for the history reads, and closes it.
 */
export async function startApi(given: ApiDependencies) {
  const replicaUrl = given.config.databaseReplicaUrl;
  const ownReplica =
    !given.replica && replicaUrl
      ? createDatabase(replicaUrl, { connectTimeoutMs: replicaConnectTimeoutMs })
      : undefined;
  const deps = { ...given, replica: given.replica ?? ownReplica };
  const app = await buildApi(deps).catch(async (error: unknown) => {
    await ownReplica?.$disconnect();
    throw error;
  });
  const address = await app.listen({ host: deps.config.http.host, port: deps.config.http.port });
  const stopCompaction = scheduleStatsCompaction(deps.db, (error) =>
    deps.log.warn({ err: error }, "stats compaction failed; will retry"),
  );
  const stopPruning = scheduleIdempotencyPruning(sqlPoolOf(deps.db), (error) =>
    deps.log.warn({ err: error }, "pruning idempotency keys failed; will retry"),
  );
  return {
    address,
    async stop() {
      stopPruning();
      stopCompaction();
      await app.close();
      await ownReplica?.$disconnect();
    },
  };
}
export { startProbes } from "./probes";
export type { RoleReadiness } from "./routes/health";
export type { MetricsExposition } from "./routes/metrics";
