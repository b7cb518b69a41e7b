import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, errorResponses } from "../errors";
import { uuidParam } from "./schemas";

/**
 * `/admin/projects/:projectId/messages...` and `/admin/projects/:projectId/events`: the project
 * API's message routes (`projectRoutes`), the same handlers, for the operator. Each route's schema is given the
 * `projectId` path parameter and the operator's security (so the OpenAPI document says so); a hook
 * names the project from the path (404 when there is none) and the actor `admin` for the audit
 * events the handlers write.
 */
export function adminMessageRoutes(
  deps: RouteDependencies,
  projectRoutes: FastifyPluginAsyncZod[],
): FastifyPluginAsync {
  return async (app) => {
    await app.register(
      async (scope) => {
        scope.addHook("onRoute", (route) => {
          const params = route.schema?.params;
          route.schema = {
            ...route.schema,
            tags: ["admin"],
            security: [{ admin: [] }],
            params:
              params instanceof z.ZodObject
                ? params.extend({ projectId: uuidParam })
                : z.object({ projectId: uuidParam }),
            response: { ...(route.schema?.response as object), ...errorResponses("not_found") },
          };
        });
        scope.addHook("preHandler", async (request: FastifyRequest) => {
          const { projectId } = request.params as { projectId: string };
          const project = await deps.db.project.findUnique({
            where: { id: projectId },
            select: { id: true },
          });
          if (!project) throw new ApiError("not_found", `no project ${projectId}`);
          request.project = { id: project.id, tokenId: null, actor: "admin" };
        });
        for (const routes of projectRoutes) await scope.register(routes);
      },
      { prefix: "/projects/:projectId" },
    );
  };
}
