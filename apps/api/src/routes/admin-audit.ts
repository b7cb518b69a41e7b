import { auditActions, auditEventJson, listAuditEvents } from "@postern/audit";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { adminRouteErrors, errorResponses } from "../errors";
import { replicaRead } from "../replica";
import { lastEventIdHeader, streamAudit } from "./audit-stream";
import { auditCursor, auditPage, pageLimit, uuidParam } from "./schemas";

const filters = {
  projectId: uuidParam.optional(),
  action: z.enum(auditActions).optional(),
};

/** `/admin/audit-logs`: query the whole audit log, or follow it live over Server-Sent Events. */
export function adminAuditRoutes(
  deps: RouteDependencies,
  stream: { keepAliveMs: number; pollIntervalMs: number },
): FastifyPluginAsyncZod {
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
          tags: ["admin"],
          summary: "Audit events, newest first, by project, action and time",
          security: [{ admin: [] }],
          querystring: z.object({
            ...filters,
            from: z.coerce.date().optional().describe("inclusive"),
            to: z.coerce.date().optional().describe("exclusive"),
            cursor: auditCursor.optional(),
            limit: pageLimit,
          }),
          response: { 200: auditPage, ...errorResponses(...adminRouteErrors, "replica_unavailable") },
        },
      },
      async (request) => {
        const page = await listAuditEvents(deps.reads, request.query);
        return { items: page.items.map(auditEventJson), nextCursor: page.nextCursor };
      },
    );

    app.get(
      "/audit-logs/stream",
      {
        schema: {
          tags: ["admin"],
          summary:
            "Live audit events as Server-Sent Events (event `audit`, id = event id; resumes from Last-Event-ID)",
          security: [{ admin: [] }],
          querystring: z.object(filters),
          headers: lastEventIdHeader,
          response: { 200: z.string().describe("text/event-stream"), ...errorResponses(...adminRouteErrors) },
        },
      },
      async (request, reply) => {
        await streamAudit(deps, request, reply, { filter: request.query, open, ...stream });
      },
    );
  };
}
