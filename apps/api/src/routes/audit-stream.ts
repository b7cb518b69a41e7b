import { type AuditFilter, auditEventJson, tailAudit } from "@postern/audit";
import type { Database } from "@postern/db";
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";

/** SSE's resume point: the id of the last event the client saw. */
export const lastEventIdHeader = z.object({
  "last-event-id": z
    .string()
    .regex(/^[0-9]{1,19}$/, "must be an audit event id")
    .optional(),
});

/**
 * Follows the audit log as Server-Sent Events (event `audit`, id = the event's id, so that
 * EventSource resumes from Last-Event-ID after a reconnect) until the client goes or the server
 * closes; `open` holds the live streams' controllers for the close hook to end them.
 */
export async function streamAudit(
  deps: { db: Database },
  request: FastifyRequest,
  reply: FastifyReply,
  stream: {
    filter: Pick<AuditFilter, "projectId" | "action">;
    keepAliveMs: number;
    pollIntervalMs: number;
    open: Set<AbortController>;
  },
): Promise<void> {
  const lastEventId = (request.headers as { "last-event-id"?: string })["last-event-id"];
  const controller = new AbortController();
  stream.open.add(controller);
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
      filter: stream.filter,
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
    stream.open.delete(controller);
    out.end();
  }
}
