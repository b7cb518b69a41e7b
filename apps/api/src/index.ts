import { type ApiDependencies, buildApi } from "./app";

export {
  type ApiDependencies,
  buildApi,
  type QuotaProject,
  type QuotaUsage,
  type RouteDependencies,
} from "./app";
export { ApiError } from "./errors";

/** The API role: listens on HTTP_HOST:HTTP_PORT until stopped. */
export async function startApi(deps: ApiDependencies) {
  const app = await buildApi(deps);
  const address = await app.listen({ host: deps.config.http.host, port: deps.config.http.port });
  return {
    address,
    async stop() {
      await app.close();
    },
  };
}
