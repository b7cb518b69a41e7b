import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue";
import type { Logger, Registry } from "@postern/telemetry";
import Fastify, { type FastifyBaseLogger } from "fastify";
import { serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import { installErrorHandling } from "./errors";
import { installSecurityHeaders, refuseNulCharacters } from "./http-security";
import { healthRoutes, type RoleReadiness } from "./routes/health";
import { type MetricsExposition, metricsRoutes } from "./routes/metrics";

/**
 * `/health`, `/health/ready` and `/metrics` on HTTP_PORT for a process that runs the SMTP or
 * worker role without the API: orchestrators probe every container, and Prometheus scrapes
 * every process, not only the API's.
 */
export async function startProbes(deps: {
  config: { http: { host: string; port: number; metricsToken: string | undefined } };
  db: Database;
  redis: Redis;
  log: Logger;
  metrics: Registry;
  metricsExposition?: MetricsExposition;
  roleReadiness?: RoleReadiness;
}) {
  const app = Fastify({ loggerInstance: deps.log as FastifyBaseLogger, disableRequestLogging: true });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  await installSecurityHeaders(app);
  refuseNulCharacters(app);
  await app.register(healthRoutes(deps));
  await app.register(
    metricsRoutes(deps.metricsExposition ?? deps.metrics, { token: deps.config.http.metricsToken }),
  );
  const address = await app.listen({ host: deps.config.http.host, port: deps.config.http.port });
  return {
    address,
    async stop() {
      await app.close();
    },
  };
}
