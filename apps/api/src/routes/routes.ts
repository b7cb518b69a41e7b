import { createRouteService, routesInputSchema } from "@postern/projects";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, errorResponses, projectRouteErrors } from "../errors";

const routesView = z.object({
  version: z.number().int(),
  routes: z.array(
    z.object({
      match: z.string(),
      target: z.object({
        type: z.enum(["upstream", "direct", "hybrid", "reject"]),
        urls: z.array(z.string()).optional().describe("upstream URLs without their passwords"),
        tls: z.enum(["opportunistic", "required", "verify"]).optional(),
        limits: z
          .object({ concurrency: z.number().int().optional(), ratePerMinute: z.number().int().optional() })
          .optional(),
      }),
    }),
  ),
});

/**
 * `GET|PUT /routes`: the project's routes by recipient glob (docs/routing.md). Registered under
 * `/v1` for the project's token and under `/admin/projects/:projectId` for the operator.
 */
export function routesRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  const service = createRouteService({ db: deps.db, redis: deps.redis, config: deps.config });
  return async (app) => {
    app.get(
      "/routes",
      {
        schema: {
          tags: ["project"],
          summary: "The project's routes and their version (upstream passwords never shown)",
          security: [{ bearer: [] }],
          response: { 200: routesView, ...errorResponses(...projectRouteErrors) },
        },
      },
      async (request) => {
        const view = await service.get(request.project.id);
        if (!view) throw new ApiError("not_found", `no project ${request.project.id}`);
        return view;
      },
    );

    app.put(
      "/routes",
      {
        schema: {
          tags: ["project"],
          summary:
            "Replace the project's routes; `version` must be the one read (409 otherwise). A URL without a password keeps the password stored for the same URL",
          security: [{ bearer: [] }],
          body: routesInputSchema,
          response: {
            200: z.object({ version: z.number().int() }),
            ...errorResponses(
              ...projectRouteErrors,
              "validation_error",
              "version_conflict",
              "invalid_routes",
            ),
          },
        },
      },
      async (request) => {
        const result = await service.replace(request.project.id, request.body, {
          actor: request.project.actor,
          ip: request.ip,
        });
        if (result.ok) return result.value;
        throw new ApiError(result.reason, result.message);
      },
    );
  };
}
