import { type Message, sqlPoolOf } from "@postern/db";
import {
  applyBulkAction,
  bulkActionLimit,
  changeMessageStatus,
  decodeEventCursor,
  encodeEventCursor,
  findMessage,
  type LifecycleAction,
  type ListedMessage,
  lifecycleActions,
  listEvents,
  listMessageEvents,
  listMessages,
  messageEventJson,
  messageEventTypes,
  retryMessage,
  streamMessageBody,
} from "@postern/messages";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, bodyErrors, errorResponses, projectRouteErrors } from "../errors";
import { readById, replicaRead } from "../replica";
import { isoDate, pageLimit, uuidParam } from "./schemas";

const messageStatus = z.enum([
  "queued",
  "deferred",
  "delivered",
  "failed",
  "cancelled",
  "held",
  "denied",
  "sandboxed",
]);

/** The filters of `GET /v1/messages` and of the bulk actions (docs/api.md names their indexes). */
const messageFilterQuery = {
  from: z.string().min(1).max(998).optional().describe("the envelope sender, exactly"),
  to: z.string().min(1).max(998).optional().describe("one of the envelope recipients, exactly"),
  createdAfter: z.coerce.date().optional().describe("accepted at or after (ISO 8601)"),
  createdBefore: z.coerce.date().optional().describe("accepted before (ISO 8601)"),
};

const messageSummary = z.object({
  id: z.string(),
  status: messageStatus,
  from: z.string().describe("envelope MAIL FROM"),
  to: z.array(z.string()).describe("envelope RCPT TO"),
  messageId: z.string().nullable().describe("the Message-ID header"),
  subject: z.string().nullable(),
  size: z.number().describe("bytes as stored"),
  attemptCount: z.number(),
  lastError: z.string().nullable(),
  createdAt: isoDate,
  updatedAt: isoDate,
  nextAttemptAt: isoDate.nullable(),
  deliveredAt: isoDate.nullable(),
  completedAt: isoDate.nullable(),
});

const smtpResult = {
  code: z.number().nullable(),
  enhancedCode: z.string().nullable(),
  response: z.string().nullable(),
};

const messageDetail = messageSummary.extend({
  sha256: z.string(),
  recipients: z.array(
    z.object({
      address: z.string(),
      status: z.enum(["pending", "delivered", "failed", "bounced", "complained"]),
      ...smtpResult,
    }),
  ),
  attempts: z.array(
    z.object({
      number: z.number(),
      startedAt: isoDate,
      durationMs: z.number(),
      upstreamHost: z.string(),
      outcome: messageStatus,
      ...smtpResult,
      recipients: z.array(z.record(z.string(), z.unknown())),
    }),
  ),
});

const iso = (date: Date | null) => date?.toISOString() ?? null;

function summary(message: ListedMessage) {
  return {
    id: message.id,
    status: message.status,
    from: message.mailFrom,
    to: message.recipients.map((r) => r.address),
    messageId: message.headerMessageId,
    subject: message.subject,
    size: message.size,
    attemptCount: message.attempts,
    lastError: message.lastError,
    createdAt: message.createdAt.toISOString(),
    updatedAt: message.updatedAt.toISOString(),
    nextAttemptAt: iso(message.nextAttemptAt),
    deliveredAt: iso(message.deliveredAt),
    completedAt: iso(message.completedAt),
  };
}

/** Keyset cursor over (createdAt desc, id desc), the order of the (projectId, createdAt, id) index. */
const cursorSchema = z.string().transform((value, ctx) => {
  const [at, id] = Buffer.from(value, "base64url").toString("utf8").split("|");
  const createdAt = new Date(at ?? "");
  if (!id || Number.isNaN(createdAt.getTime()) || !uuidParam.safeParse(id).success) {
    ctx.addIssue({ code: "custom", message: "must be the nextCursor of a previous page" });
    return z.NEVER;
  }
  return { createdAt, id };
});

function encodeCursor(message: Message): string {
  return Buffer.from(`${message.createdAt.toISOString()}|${message.id}`).toString("base64url");
}

const messageEvent = z.object({
  id: z.string().describe("the event's id; a message's events in this order are oldest first"),
  messageId: z.string(),
  type: z.enum(messageEventTypes),
  createdAt: isoDate,
  data: z
    .record(z.string(), z.unknown())
    .describe(
      "message.accepted: { mailFrom, recipients: [address], size, headerMessageId } (a sandbox project's message also has status: sandboxed); message.held: the same with status: held; message.delivered, .deferred, .failed: { attempt, upstreamHost, recipients: [{ address, status, code, enhancedCode, response }] }; message.retried, .cancelled, .approved, .denied: {} (from a bulk action: { bulk: true }; from the hold expiry: { expired: true })",
    ),
});

const eventCursor = z.string().transform((value, ctx) => {
  const cursor = decodeEventCursor(value);
  if (!cursor) {
    ctx.addIssue({ code: "custom", message: "must be the nextCursor of a previous page" });
    return z.NEVER;
  }
  return cursor;
});

/** The single-message actions that only move the status (POST /messages/:id/<action>). */
const statusRoutes: Array<{ action: Exclude<LifecycleAction, "retry">; summary: string; allowed: string }> = [
  {
    action: "cancel",
    summary: "Cancel a queued, deferred or held message: it is never delivered afterwards",
    allowed: "only queued, deferred or held messages can be cancelled",
  },
  {
    action: "approve",
    summary: "Approve a held message: it is queued and delivered now",
    allowed: "only held messages can be approved",
  },
  {
    action: "deny",
    summary: "Deny a held message: it is never delivered",
    allowed: "only held messages can be denied",
  },
];

/**
 * The reads here (lists, a message, its events and bytes, the event feed) go to `deps.reads`, the
 * read replica when there is one; a message asked for by id that the replica does not have yet is
 * read from the primary. The actions write to the primary.
 */
export function messageRoutes(deps: RouteDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/messages",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "The project's messages, newest first",
          security: [{ bearer: [] }],
          querystring: z.object({
            status: messageStatus.optional(),
            ...messageFilterQuery,
            subject: z
              .string()
              .min(1)
              .max(998)
              .optional()
              .describe("a substring of the Subject, case-insensitive"),
            limit: pageLimit,
            cursor: cursorSchema.optional(),
          }),
          response: {
            200: z.object({ items: z.array(messageSummary), nextCursor: z.string().nullable() }),
            ...errorResponses(...projectRouteErrors, "replica_unavailable"),
          },
        },
      },
      async (request) => {
        const { limit, cursor, ...filter } = request.query;
        const rows = await listMessages(deps.reads, {
          ...filter,
          projectId: request.project.id,
          limit,
          before: cursor,
        });
        const items = rows.slice(0, limit);
        const last = items.at(-1);
        return {
          items: items.map(summary),
          nextCursor: rows.length > limit && last ? encodeCursor(last) : null,
        };
      },
    );

    app.get(
      "/messages/:id",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "A message with its recipients' results and every delivery attempt",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          response: {
            200: messageDetail,
            ...errorResponses(...projectRouteErrors, "not_found", "replica_unavailable"),
          },
        },
      },
      async (request) => {
        const message = await readById(
          deps,
          (db) => findMessage(db, request.project.id, request.params.id),
          (found) => found !== null,
        );
        if (!message) throw new ApiError("not_found", `no message ${request.params.id}`);
        return {
          ...summary(message),
          sha256: message.sha256,
          recipients: message.recipients.map((r) => ({
            address: r.address,
            status: r.status,
            code: r.code,
            enhancedCode: r.enhancedCode,
            response: r.response,
          })),
          attempts: message.deliveryAttempts.map((a) => ({
            number: a.number,
            startedAt: a.startedAt.toISOString(),
            durationMs: a.durationMs,
            upstreamHost: a.upstreamHost,
            outcome: a.outcome,
            code: a.code,
            enhancedCode: a.enhancedCode,
            response: a.response,
            recipients: Array.isArray(a.recipients) ? (a.recipients as Record<string, unknown>[]) : [],
          })),
        };
      },
    );

    app.get(
      "/messages/:id/raw",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "The message's stored bytes (as received, with Postern's Received header)",
          description: "410 once retention has dropped the body of a delivered or failed message.",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          produces: ["message/rfc822"],
          response: {
            200: z.any().describe("message/rfc822 bytes"),
            ...errorResponses(...projectRouteErrors, "not_found", "gone", "replica_unavailable"),
          },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        const body = await readById(
          deps,
          (db) => streamMessageBody(sqlPoolOf(db), request.project.id, id),
          (found) => found.state !== "missing",
        );
        if (body.state === "missing") throw new ApiError("not_found", `no message ${id}`);
        if (body.state === "gone")
          throw new ApiError("gone", `the body of message ${id} was dropped after its retention`);
        return reply
          .header("content-type", "message/rfc822")
          .header("content-length", body.size)
          .send(body.stream);
      },
    );

    app.post(
      "/messages/:id/retry",
      {
        schema: {
          tags: ["project"],
          summary: "Schedule a delivery attempt now for a deferred or failed message",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          response: {
            202: z.object({ id: z.string(), status: z.literal("queued") }),
            ...errorResponses(...projectRouteErrors, "not_found", "invalid_transition"),
          },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        const projectId = request.project.id;
        const outcome = await retryMessage(deps.db, {
          id,
          projectId,
          actor: request.project.actor,
          ip: request.ip,
        });
        if (!outcome.ok && outcome.reason === "not_found")
          throw new ApiError("not_found", `no message ${id}`);
        if (!outcome.ok) {
          throw new ApiError(
            "invalid_transition",
            `message is ${outcome.from}; only deferred or failed messages can be retried`,
          );
        }
        await deps.deliveryProducer.deliverNow({ id, projectId });
        return reply.status(202).send({ id, status: "queued" as const });
      },
    );

    for (const { action, summary: routeSummary, allowed } of statusRoutes) {
      const to = lifecycleActions[action].to;
      app.post(
        `/messages/:id/${action}`,
        {
          schema: {
            tags: ["project"],
            summary: routeSummary,
            security: [{ bearer: [] }],
            params: z.object({ id: uuidParam }),
            response: {
              202: z.object({ id: z.string(), status: z.literal(to) }),
              ...errorResponses(...projectRouteErrors, "not_found", "invalid_transition"),
            },
          },
        },
        async (request, reply) => {
          const { id } = request.params;
          const projectId = request.project.id;
          const outcome = await changeMessageStatus(deps.db, {
            id,
            projectId,
            action,
            actor: request.project.actor,
            ip: request.ip,
          });
          if (!outcome.ok && outcome.reason === "not_found")
            throw new ApiError("not_found", `no message ${id}`);
          if (!outcome.ok) throw new ApiError("invalid_transition", `message is ${outcome.from}; ${allowed}`);
          // An approved message is delivered now; if Redis does not take the job, the sweeper
          // enqueues the queued message.
          if (action === "approve") await deps.deliveryProducer.deliverNow({ id, projectId });
          return reply.status(202).send({ id, status: to });
        },
      );
    }

    app.post(
      "/messages/actions",
      {
        schema: {
          tags: ["project"],
          summary: `Retry, cancel, approve or deny every message a filter matches (the newest ${bulkActionLimit})`,
          security: [{ bearer: [] }],
          body: z.object({
            action: z.enum(["retry", "cancel", "approve", "deny"]),
            filter: z
              .object({ status: messageStatus.optional(), ...messageFilterQuery })
              .strict()
              .default({}),
            dryRun: z.boolean().default(false).describe("count only; nothing is changed or audited"),
          }),
          response: {
            200: z.object({
              matched: z
                .number()
                .describe(`messages the filter matched, at most ${bulkActionLimit}: at that, run it again`),
              changed: z.number().describe("those whose status allowed the action (dry run: would allow)"),
            }),
            ...errorResponses(...projectRouteErrors, ...bodyErrors),
          },
        },
      },
      async (request) => {
        const { action, filter, dryRun } = request.body;
        const projectId = request.project.id;
        const result = await applyBulkAction(deps.db, {
          projectId,
          action,
          filter,
          dryRun,
          actor: request.project.actor,
          ip: request.ip,
        });
        // An attempt now for each retried or approved message; one whose job cannot be added (Redis
        // down) is still `queued` in PostgreSQL, and the sweeper enqueues it.
        if (lifecycleActions[action].to === "queued") {
          await deps.deliveryProducer.deliverManyNow(result.changedIds.map((id) => ({ id, projectId })));
        }
        return { matched: result.matched, changed: result.changed };
      },
    );

    app.get(
      "/messages/:id/events",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "A message's events (status changes), oldest first",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          response: {
            200: z.object({ items: z.array(messageEvent) }),
            ...errorResponses(...projectRouteErrors, "not_found", "replica_unavailable"),
          },
        },
      },
      async (request) => {
        const events = await readById(
          deps,
          (db) => listMessageEvents(db, request.project.id, request.params.id),
          (found) => found !== undefined && found !== null,
        );
        if (!events) throw new ApiError("not_found", `no message ${request.params.id}`);
        return { items: events.map(messageEventJson) };
      },
    );

    app.get(
      "/events",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "The project's message events after a cursor, oldest first (newest last)",
          security: [{ bearer: [] }],
          querystring: z.object({
            after: eventCursor
              .optional()
              .describe("the nextCursor of a previous page; unset: from the first event"),
            type: z.enum(messageEventTypes).optional(),
            limit: pageLimit,
          }),
          response: {
            200: z.object({
              items: z.array(messageEvent),
              nextCursor: z
                .string()
                .nullable()
                .describe(
                  "pass as `after` to read on (also when items is empty: poll with it); null before any event",
                ),
            }),
            ...errorResponses(...projectRouteErrors, "replica_unavailable"),
          },
        },
      },
      async (request) => {
        const { after, type, limit } = request.query;
        const events = await listEvents(deps.reads, { projectId: request.project.id, after, type, limit });
        const last = events.at(-1);
        const position = last ?? after;
        return {
          items: events.map(messageEventJson),
          nextCursor: position ? encodeEventCursor(position) : null,
        };
      },
    );
  };
}
