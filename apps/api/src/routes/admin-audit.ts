import { auditActions, auditEventJson, listAuditEvents, tailAudit } from "@postern/audit";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { adminRouteErrors, errorResponses } from "../errors";
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
          response: { 200: auditPage, ...errorResponses(...adminRouteErrors) },
        },
      },
      async (request) => {
        const page = await listAuditEvents(deps.db, request.query);
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
          headers: z.object({
            "last-event-id": z
              .string()
              .regex(/^[0-9]{1,19}$/, "must be an audit event id")
              .optional(),
          }),
          response: { 200: z.string().describe("text/event-stream"), ...errorResponses(...adminRouteErrors) },
        },
      },
      async (request, reply) => {
        const lastEventId = request.headers["last-event-id"];
        const controller = new AbortController();
        open.add(controller);
        request.raw.on("close", () => controller.abort());
        reply.hijack();
        const out = reply.raw;
        out.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache, no-transform",
          connection: "keep-alive",
          // Proxies such as nginx would otherwise buffer the stream.
          "x-accel-buffering": "no",
        });
        // Tells EventSource how long to wait before reconnecting (it then sends Last-Event-ID).
        out.write("retry: 2000\n\n");
        const keepAlive = setInterval(() => out.write(": keep-alive\n\n"), stream.keepAliveMs);
        try {
          for await (const event of tailAudit(deps.db, {
            filter: request.query,
            afterId: lastEventId === undefined ? undefined : BigInt(lastEventId),
            intervalMs: stream.pollIntervalMs,
            signal: controller.signal,
          })) {
            out.write(`id: ${event.id}\nevent: audit\ndata: ${JSON.stringify(auditEventJson(event))}\n\n`);
          }
        } catch (error) {
          if (!controller.signal.aborted) request.log.error({ err: error }, "audit stream failed");
        } finally {
          clearInterval(keepAlive);
          open.delete(controller);
          out.end();
        }
      },
    );
  };
}
