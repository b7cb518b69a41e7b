import { auditEventJson, listAuditEvents } from "@postern/audit";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { errorResponses, projectRouteErrors } from "../errors";
import { auditCursor, auditPage, pageLimit } from "./schemas";

export function projectAuditRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/audit-logs",
      {
        schema: {
          tags: ["project"],
          summary: "The project's audit events, newest first",
          security: [{ bearer: [] }],
          querystring: z.object({ cursor: auditCursor.optional(), limit: pageLimit }),
          response: { 200: auditPage, ...errorResponses(...projectRouteErrors) },
        },
      },
      async (request) => {
        const page = await listAuditEvents(deps.db, {
          projectId: request.project.id,
          cursor: request.query.cursor,
          limit: request.query.limit,
        });
        return { items: page.items.map(auditEventJson), nextCursor: page.nextCursor };
      },
    );
  };
}
