import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { ResolvedConfig } from "@postern/config";
import type { Database } from "@postern/db";
import type { Redis } from "@postern/queue";
import type { Logger, Registry } from "@postern/telemetry";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { installErrorHandling } from "./errors";
import { healthRoutes } from "./routes/health";

export interface ApiDependencies {
  config: ResolvedConfig;
  db: Database;
  /** A connection for commands (health checks, rate limits); never used for blocking calls. */
  redis: Redis;
  log: Logger;
  metrics: Registry;
}

export async function buildApi(deps: ApiDependencies): Promise<FastifyInstance> {
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast keeps Fastify's default logger type parameter.
    loggerInstance: deps.log as FastifyBaseLogger,
    trustProxy: false,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);

  await app.register(swagger, {
    openapi: {
      info: {
        title: "Postern API",
        version: "0.1.0",
        description: "Stats, messages, audit log and project management.",
      },
      components: {
        securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  await app.register(healthRoutes(deps));
  return app;
}
