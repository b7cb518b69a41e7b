import cookie from "@fastify/cookie";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import { createApiTokenVerifier } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import { type Database, sqlPoolOf } from "@postern/db";
import { createDomainService } from "@postern/dkim";
import { createProjectService, createSuppressionService, SuppressionBook } from "@postern/projects";
import { createDeliveryProducer, type DeliveryProducer, type Redis } from "@postern/queue";
import { createProjectQuota } from "@postern/quota";
import { createRulesCache } from "@postern/rules";
import { createAcceptor } from "@postern/smtp";
import type { Logger, Registry } from "@postern/telemetry";
import { createWebhookService, createWebhookWaker } from "@postern/webhooks";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { adminTokenAuth, projectTokenAuth } from "./auth";
import { dashboardRoutes } from "./dashboard";
import { installErrorHandling } from "./errors";
import { installSecurityHeaders, noStore, refuseNulCharacters } from "./http-security";
import { adminAuditRoutes } from "./routes/admin-audit";
import { adminMessageRoutes } from "./routes/admin-messages";
import { adminProjectRoutes } from "./routes/admin-projects";
import { domainRoutes } from "./routes/domains";
import { healthRoutes, type RoleReadiness } from "./routes/health";
import { messageRoutes } from "./routes/messages";
import { installHttpMetrics, type MetricsExposition, metricsRoutes } from "./routes/metrics";
import { projectRoutes } from "./routes/project";
import { projectAuditRoutes } from "./routes/project-audit";
import { routesRoutes } from "./routes/routes";
import { rulesRoutes } from "./routes/rules";
import { sessionRoutes } from "./routes/session";
import { statsRoutes } from "./routes/stats";
import { submissionRoutes } from "./routes/submission";
import { suppressionRoutes } from "./routes/suppressions";
import { adminSystemRoutes } from "./routes/system";
import { webhookRoutes } from "./routes/webhooks";
import { createDashboardSessions } from "./sessions";

export interface ApiDependencies {
  config: ResolvedConfig;
  db: Database;
  /**
   * A read-only replica of `db` (DATABASE_REPLICA_URL) for the history reads: message lists and
   * details, events, stats, the audit log, the suppressions list. None: they read `db`.
   */
  replica?: Database;
  /** A connection for commands (health checks, rate limits); never used for blocking calls. */
  redis: Redis;
  log: Logger;
  metrics: Registry;
  /** What GET /metrics serves when it is more than `metrics` (worker threads merged in). */
  metricsExposition?: MetricsExposition;
  /** Schedules retries; created on `redis` when not given. */
  deliveryProducer?: DeliveryProducer;
  /** Current quota usage of a project; packages/quota's counters in Redis when not given. */
  quotaUsage?: (project: QuotaProject) => Promise<QuotaUsage>;
  /** The roles of this process and whether each serves, for /health/ready; none when not given. */
  roleReadiness?: RoleReadiness;
  /** SSE tuning; defaults suit production. */
  auditStream?: { keepAliveMs?: number; pollIntervalMs?: number };
}

/** What route groups receive: the dependencies with everything optional resolved. */
export type RouteDependencies = ApiDependencies & {
  /** Where history reads go (routes marked `replicaRead`): the replica, or `db` without one. */
  reads: Database;
  deliveryProducer: DeliveryProducer;
  quotaUsage: (project: QuotaProject) => Promise<QuotaUsage>;
};

export interface QuotaProject {
  id: string;
  quotaPerMinute: number;
  quotaDaily: number;
}

/** As packages/quota's `usage(project)` answers it (resetsAt null: nothing counted in the window). */
export interface QuotaUsage {
  perMinute: { used: number; resetsAt: Date | null };
  daily: { used: number; resetsAt: Date | null };
}

/**
 * One log line per request, when it is answered (Fastify's "request completed", with status and
 * time), not a second one when it arrives: a client that submits a message per request costs one
 * line per message, as an SMTP message does.
 */
class AnsweredRequestsLog extends LogController {
  override incomingRequest() {}
}

export async function buildApi(deps: ApiDependencies): Promise<FastifyInstance> {
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast keeps Fastify's default logger type parameter.
    loggerInstance: deps.log as FastifyBaseLogger,
    trustProxy: false,
    logController: new AnsweredRequestsLog(),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app, { replica: deps.replica });
  installHttpMetrics(app, deps.metrics);
  await installSecurityHeaders(app);
  refuseNulCharacters(app);
  // The dashboard's session cookie (sessions.ts); nothing else reads or sets cookies.
  await app.register(cookie);

  await app.register(swagger, {
    openapi: {
      info: {
        title: "Postern API",
        version: "0.1.0",
        description: "Stats, messages, audit log and project management.",
      },
      components: {
        securitySchemes: {
          bearer: { type: "http", scheme: "bearer", description: "a project API token (pst_api_...)" },
          admin: { type: "http", scheme: "bearer", description: "the operator token (ADMIN_TOKEN)" },
          metrics: { type: "http", scheme: "bearer", description: "the metrics token (METRICS_TOKEN)" },
          session: {
            type: "apiKey",
            in: "cookie",
            name: "postern_session",
            description:
              "a dashboard session (POST /session); authenticates /v1 or /admin as the token it was opened with",
          },
        },
      },
    },
    transform: jsonSchemaTransform,
  });
  // No validator badge: it would send the document's URL to validator.swagger.io.
  await app.register(swaggerUi, { routePrefix: "/docs", uiConfig: { validatorUrl: null } });

  const deliveryProducer =
    deps.deliveryProducer ?? createDeliveryProducer(deps.redis, deps.config.redisKeyPrefix);
  const quota = createProjectQuota(deps.redis, deps.config.redisKeyPrefix);
  const tokens = createApiTokenVerifier({
    db: deps.db,
    keyPrefix: deps.config.redisKeyPrefix,
    cacheTtlMs: deps.config.http.tokenCacheTtlMs,
    onBookkeepingError: (error) => deps.log.warn({ err: error }, "could not record token use"),
  });
  // A subscribed connection takes no other commands: its own. Not awaited: with Redis down the
  // API serves, reading every token from PostgreSQL until the subscription is made.
  const invalidations = deps.redis.duplicate();
  invalidations.on("error", (error) => deps.log.debug({ err: error }, "redis invalidation subscriber"));
  void tokens
    .subscribe(invalidations)
    .catch((error: Error) =>
      deps.log.warn({ err: error }, "cannot hear credential invalidations; API tokens are not cached"),
    );
  // Dashboard sessions are checked through the same verifier as bearer tokens: same revocation.
  const sessions = createDashboardSessions({
    redis: deps.redis,
    keyPrefix: deps.config.redisKeyPrefix,
    verifier: tokens,
    adminToken: deps.config.adminToken,
    sessionMs: deps.config.http.dashboardSessionMs,
  });
  const routeDeps = {
    ...deps,
    reads: deps.replica ?? deps.db,
    deliveryProducer,
    quotaUsage: deps.quotaUsage ?? ((p: QuotaProject) => quota.usage(p)),
  };
  // HTTP submission stores through the same acceptor as SMTP (group commit, then a delivery job).
  const sql = sqlPoolOf(deps.db);
  const acceptor = createAcceptor({ sql, producer: deliveryProducer, log: deps.log });
  // Submissions are judged by the project's rules, cached per process and dropped on change.
  const rules = createRulesCache({ db: deps.db, keyPrefix: deps.config.redisKeyPrefix });
  const rulesSubscriber = deps.redis.duplicate();
  rulesSubscriber.on("error", (error) => deps.log.debug({ err: error }, "redis rules subscriber"));
  // The API serves without Redis (health, stats): the subscription is made when Redis answers,
  // and until then the cache's TTL bounds how long another node's change goes unseen.
  rules
    .subscribe(rulesSubscriber)
    .catch((error: Error) => deps.log.warn({ err: error }, "rules changes not subscribed yet"));
  const submissionDeps = {
    ...routeDeps,
    acceptor,
    quota,
    sql,
    projectPolicies: tokens,
    rules,
    // Read by the suppressions version of the project's policy: a change is seen with the policy.
    suppressions: new SuppressionBook(deps.db),
    storing: new Map<string, Promise<string>>(),
  };
  const projects = createProjectService({ ...deps, localCaches: [tokens] });
  // Verified domains are part of the project's policy, active keys what the workers sign with.
  const domains = createDomainService({ ...deps, localCaches: [tokens] });
  // A test event or a replay queues a job for its endpoint in the workers' webhook queue.
  const webhookWaker = createWebhookWaker(deps.redis, deps.config.redisKeyPrefix);
  const webhooks = createWebhookService({
    ...deps,
    wake: (endpointId) => webhookWaker.wake([endpointId]),
  });
  // What a project manages of its own (messages, stats, rules, routes, domains, suppressions, webhooks): under /v1 for
  // its token, under /admin/projects/:projectId for the operator.
  const projectScopedRoutes = [
    messageRoutes(routeDeps),
    submissionRoutes(submissionDeps),
    statsRoutes(routeDeps),
    rulesRoutes({ ...routeDeps, rules }),
    routesRoutes(routeDeps),
    domainRoutes(domains),
    suppressionRoutes(createSuppressionService({ ...deps, reads: routeDeps.reads, localCaches: [tokens] })),
    webhookRoutes(webhooks),
  ];
  // Jobs of committed messages are added, and recipients counted ahead go back, before the
  // producer closes.
  app.addHook("onClose", async () => {
    await acceptor.settled();
    await quota.close();
    invalidations.disconnect();
    rulesSubscriber.disconnect();
    await webhookWaker.close();
    if (!deps.deliveryProducer) await deliveryProducer.close();
  });

  await app.register(
    metricsRoutes(deps.metricsExposition ?? deps.metrics, { token: deps.config.http.metricsToken }),
  );
  await app.register(healthRoutes(deps));
  await app.register(sessionRoutes(sessions));
  await app.register(dashboardRoutes());

  await app.register(
    async (v1) => {
      // Tenant data, never kept by a browser or proxy cache.
      v1.addHook("onRequest", noStore);
      v1.addHook(
        "onRequest",
        projectTokenAuth({
          verifier: tokens,
          sessions,
          redis: deps.redis,
          keyPrefix: deps.config.redisKeyPrefix,
          rateLimitPerMinute: deps.config.http.rateLimitPerMinute,
        }),
      );
      await v1.register(projectRoutes({ ...routeDeps, projects }));
      for (const routes of projectScopedRoutes) await v1.register(routes);
      await v1.register(projectAuditRoutes(routeDeps));
    },
    { prefix: "/v1" },
  );

  await app.register(
    async (admin) => {
      // Answers here carry new SMTP passwords and API tokens (shown once) and every project's data.
      admin.addHook("onRequest", noStore);
      admin.addHook("onRequest", adminTokenAuth(deps.config.adminToken, sessions));
      await admin.register(adminProjectRoutes(projects));
      await admin.register(adminMessageRoutes(routeDeps, projectScopedRoutes));
      await admin.register(adminSystemRoutes(routeDeps));
      await admin.register(
        adminAuditRoutes(routeDeps, {
          keepAliveMs: deps.auditStream?.keepAliveMs ?? 15_000,
          pollIntervalMs: deps.auditStream?.pollIntervalMs ?? 250,
        }),
      );
    },
    { prefix: "/admin" },
  );
  return app;
}
