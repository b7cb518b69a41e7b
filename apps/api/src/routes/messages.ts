import { recordAudit } from "@postern/audit";
import type { Message, Prisma, SqlPool } from "@postern/db";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError } from "../errors";
import { readMessageBody } from "../message-body";
import { errorBody, errors, isoDate, pageLimit, uuidParam } from "./schemas";

const messageStatus = z.enum(["queued", "deferred", "delivered", "failed"]);

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
    z.object({ address: z.string(), status: z.enum(["pending", "delivered", "failed"]), ...smtpResult }),
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

function summary(message: Message & { recipients: { address: string }[] }) {
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

export function messageRoutes(
  deps: RouteDependencies & { sql: Pick<SqlPool, "query"> },
): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/messages",
      {
        schema: {
          tags: ["project"],
          summary: "The project's messages, newest first",
          security: [{ bearer: [] }],
          querystring: z.object({
            status: messageStatus.optional(),
            limit: pageLimit,
            cursor: cursorSchema.optional(),
          }),
          response: {
            200: z.object({ items: z.array(messageSummary), nextCursor: z.string().nullable() }),
            ...errors,
          },
        },
      },
      async (request) => {
        const { status, limit, cursor } = request.query;
        const where: Prisma.MessageWhereInput = { projectId: request.project.id, status };
        if (cursor) {
          where.OR = [
            { createdAt: { lt: cursor.createdAt } },
            { createdAt: cursor.createdAt, id: { lt: cursor.id } },
          ];
        }
        const rows = await deps.db.message.findMany({
          where,
          orderBy: [{ createdAt: "desc" }, { id: "desc" }],
          take: limit + 1,
          include: { recipients: { select: { address: true } } },
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
        schema: {
          tags: ["project"],
          summary: "A message with its recipients' results and every delivery attempt",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          response: { 200: messageDetail, ...errors },
        },
      },
      async (request) => {
        const message = await deps.db.message.findFirst({
          where: { id: request.params.id, projectId: request.project.id },
          include: {
            recipients: { orderBy: { address: "asc" } },
            deliveryAttempts: { orderBy: { number: "asc" } },
          },
        });
        if (!message) throw new ApiError(404, "not_found", `no message ${request.params.id}`);
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
        schema: {
          tags: ["project"],
          summary: "The message's stored bytes (as received, with Postern's Received header)",
          description: "410 once retention has dropped the body of a delivered or failed message.",
          security: [{ bearer: [] }],
          params: z.object({ id: uuidParam }),
          produces: ["message/rfc822"],
          response: {
            200: z.any().describe("message/rfc822 bytes"),
            410: errorBody,
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        const body = await readMessageBody(deps.sql, request.project.id, id);
        if (body.state === "missing") throw new ApiError(404, "not_found", `no message ${id}`);
        if (body.state === "gone")
          throw new ApiError(
            410,
            "body_expired",
            `the body of message ${id} was dropped after its retention`,
          );
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
            409: errorBody,
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        const projectId = request.project.id;
        const outcome = await deps.db.$transaction(async (tx) => {
          // Conditional update: two concurrent retries, or a retry racing the worker, change the row once.
          const changed = await tx.message.updateMany({
            where: { id, projectId, status: { in: ["deferred", "failed"] } },
            data: { status: "queued", nextAttemptAt: new Date(), completedAt: null },
          });
          if (changed.count === 0) {
            const current = await tx.message.findFirst({
              where: { id, projectId },
              select: { status: true },
            });
            return current ? ({ ok: false, code: "conflict", status: current.status } as const) : undefined;
          }
          // Recipients the upstream refused get another chance; those it accepted are never re-sent.
          await tx.messageRecipient.updateMany({
            where: { messageId: id, status: "failed" },
            data: { status: "pending" },
          });
          await recordAudit(tx, {
            action: "message.retried",
            actor: `token:${request.project.tokenId}`,
            projectId,
            ip: request.ip,
            details: { messageId: id },
          });
          return { ok: true } as const;
        });
        if (!outcome) throw new ApiError(404, "not_found", `no message ${id}`);
        if (!outcome.ok) {
          throw new ApiError(
            409,
            "not_retryable",
            `message is ${outcome.status}; only deferred or failed messages can be retried`,
          );
        }
        await deps.deliveryProducer.deliverNow({ id, projectId });
        return reply.status(202).send({ id, status: "queued" as const });
      },
    );
  };
}
