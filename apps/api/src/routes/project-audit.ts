import { auditActions, auditEventJson, listAuditEvents } from "@postern/audit";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { errorResponses, projectRouteErrors } from "../errors";
import { replicaRead } from "../replica";
import { lastEventIdHeader, streamAudit } from "./audit-stream";
import { auditCursor, auditPage, pageLimit } from "./schemas";

/** `/v1/audit-logs`: the project's audit events, page by page or live over Server-Sent Events. */
export function projectAuditRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    const open = new Set<AbortController>();
    // Streams never end on their own: end them so that close() does not wait for clients.
    app.addHook("preClose", async () => {
      for (const controller of open) controller.abort();
    });

    app.get(
      "/audit-logs",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "The project's audit events, newest first",
          security: [{ bearer: [] }],
          querystring: z.object({ cursor: auditCursor.optional(), limit: pageLimit }),
          response: { 200: auditPage, ...errorResponses(...projectRouteErrors, "replica_unavailable") },
        },
      },
      async (request) => {
        const page = await listAuditEvents(deps.reads, {
          projectId: request.project.id,
          cursor: request.query.cursor,
          limit: request.query.limit,
        });
        return { items: page.items.map(auditEventJson), nextCursor: page.nextCursor };
      },
    );

    app.get(
      "/audit-logs/stream",
      {
        schema: {
          tags: ["project"],
          summary:
            "The project's live audit events as Server-Sent Events (event `audit`, id = event id; resumes from Last-Event-ID)",
          security: [{ bearer: [] }],
          querystring: z.object({ action: z.enum(auditActions).optional() }),
          headers: lastEventIdHeader,
          response: {
            200: z.string().describe("text/event-stream"),
            ...errorResponses(...projectRouteErrors),
          },
        },
      },
      async (request, reply) => {
        await streamAudit(deps, request, reply, {
          filter: { projectId: request.project.id, action: request.query.action },
          open,
          keepAliveMs: deps.auditStream?.keepAliveMs ?? 15_000,
          pollIntervalMs: deps.auditStream?.pollIntervalMs ?? 250,
        });
      },
    );
  };
}
