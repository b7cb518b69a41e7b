import {
  subscribableEventTypes,
  type WebhookRefusal,
  type WebhookService,
  webhookInputSchema,
  webhookPatchSchema,
} from "@postern/webhooks";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { ApiError, bodyErrors, errorResponses, projectRouteErrors } from "../errors";
import { isoDate, pageLimit, uuidParam } from "./schemas";

const webhookBody = z.object({
  id: z.string(),
  url: z.string(),
  description: z.string().nullable(),
  events: z.array(z.string()).describe(`event types it receives, of: ${subscribableEventTypes.join(", ")}`),
  status: z.enum(["active", "disabled"]),
  disabledReason: z
    .string()
    .nullable()
    .describe(
      "`manual` (PATCH enabled: false) or `failing` (every attempt failed for WEBHOOK_DISABLE_AFTER)",
    ),
  disabledAt: isoDate.nullable(),
  failingSince: isoDate
    .nullable()
    .describe("since when every attempt has failed; null: the last one succeeded"),
  createdAt: isoDate,
  updatedAt: isoDate,
});

const eventObject = z
  .object({
    id: z.string().describe("the event's id (GET /v1/events), also the `webhook-id` header"),
    type: z.string(),
    createdAt: isoDate,
    projectId: z.string(),
    messageId: z.string().nullable(),
    data: z
      .record(z.string(), z.unknown())
      .describe("with `recipients`: [{address, status, code, enhancedCode, response}]"),
  })
  .describe("the JSON body POSTed (docs/webhooks.md)");

const deliveryBody = z.object({
  id: z.string(),
  eventId: z.string().nullable().describe("null for a test event"),
  eventType: z.string(),
  status: z.enum(["pending", "succeeded", "failed"]),
  nextAttemptAt: isoDate.nullable(),
  lastStatusCode: z.number().nullable(),
  lastError: z.string().nullable(),
  createdAt: isoDate,
  completedAt: isoDate.nullable(),
  payload: eventObject,
  attempts: z.array(
    z.object({
      number: z.number(),
      startedAt: isoDate,
      durationMs: z.number(),
      statusCode: z.number().nullable().describe("null: no answer (see `error`)"),
      response: z.string().nullable().describe("the first 1024 bytes of the answer's body"),
      error: z.string().nullable(),
    }),
  ),
});

const webhookParams = z.object({ id: uuidParam });

/** A refusal of the webhook service as the API's error. */
function refused(outcome: { reason: WebhookRefusal; message: string }): never {
  throw new ApiError(outcome.reason, outcome.message);
}

/**
 * `/v1/webhooks` (CONTRACT §9, docs/webhooks.md): a project's endpoints, their deliveries and
 * replays. Registered under `/admin/projects/:projectId` too (admin-messages.ts).
 */
export function webhookRoutes(webhooks: WebhookService): FastifyPluginAsyncZod {
  return async (app) => {
    const by = (request: { project: { actor: string }; ip: string }) => ({
      actor: request.project.actor,
      ip: request.ip,
    });
    const notFound = (id: string): never => {
      throw new ApiError("not_found", `no webhook ${id}`);
    };

    app.get(
      "/webhooks",
      {
        schema: {
          tags: ["project"],
          summary: "The project's webhook endpoints, oldest first",
          security: [{ bearer: [] }],
          response: {
            200: z.object({ items: z.array(webhookBody) }),
            ...errorResponses(...projectRouteErrors),
          },
        },
      },
      async (request) => ({ items: await webhooks.list(request.project.id) }),
    );

    app.post(
      "/webhooks",
      {
        schema: {
          tags: ["project"],
          summary: "Add a webhook endpoint; its signing secret is in this answer only",
          description:
            "Events of the listed types are POSTed to the URL as JSON, signed as Standard Webhooks " +
            "(`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the secret `whsec_...` " +
            "answered here, and retried along WEBHOOK_RETRY_SCHEDULE until the endpoint answers 2xx.",
          security: [{ bearer: [] }],
          body: webhookInputSchema,
          response: {
            201: webhookBody.extend({ secret: z.string().describe("`whsec_<base64>`: shown once") }),
            ...errorResponses(...projectRouteErrors, ...bodyErrors, "invalid_webhook_url", "not_found"),
          },
        },
      },
      async (request, reply) => {
        const outcome = await webhooks.create(request.project.id, request.body, by(request));
        if (!outcome.ok) refused(outcome);
        return reply.status(201).send(outcome.value);
      },
    );

    app.get(
      "/webhooks/:id",
      {
        schema: {
          tags: ["project"],
          summary: "A webhook endpoint",
          security: [{ bearer: [] }],
          params: webhookParams,
          response: { 200: webhookBody, ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request) =>
        (await webhooks.get(request.project.id, request.params.id)) ?? notFound(request.params.id),
    );

    app.patch(
      "/webhooks/:id",
      {
        schema: {
          tags: ["project"],
          summary: "Change an endpoint's URL, event types or description, or disable or enable it",
          security: [{ bearer: [] }],
          params: webhookParams,
          body: webhookPatchSchema,
          response: {
            200: webhookBody,
            ...errorResponses(...projectRouteErrors, ...bodyErrors, "invalid_webhook_url", "not_found"),
          },
        },
      },
      async (request) => {
        const outcome = await webhooks.update(
          request.project.id,
          request.params.id,
          request.body,
          by(request),
        );
        if (!outcome.ok) refused(outcome);
        return outcome.value;
      },
    );

    app.delete(
      "/webhooks/:id",
      {
        schema: {
          tags: ["project"],
          summary: "Delete a webhook endpoint and its deliveries",
          security: [{ bearer: [] }],
          params: webhookParams,
          response: { 204: z.null(), ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request, reply) => {
        if (!(await webhooks.remove(request.project.id, request.params.id, by(request))))
          notFound(request.params.id);
        return reply.status(204).send(null);
      },
    );

    app.post(
      "/webhooks/:id/test",
      {
        schema: {
          tags: ["project"],
          summary: "Send a `webhook.test` event to the endpoint (whatever types it subscribes to)",
          security: [{ bearer: [] }],
          params: webhookParams,
          response: {
            202: deliveryBody,
            ...errorResponses(...projectRouteErrors, "not_found", "webhook_disabled"),
          },
        },
      },
      async (request, reply) => {
        const outcome = await webhooks.sendTest(request.project.id, request.params.id);
        if (!outcome.ok) refused(outcome);
        return reply.status(202).send(outcome.value);
      },
    );

    app.get(
      "/webhooks/:id/deliveries",
      {
        schema: {
          tags: ["project"],
          summary: "The endpoint's deliveries, newest first, each with every attempt",
          security: [{ bearer: [] }],
          params: webhookParams,
          querystring: z.object({
            status: z.enum(["pending", "succeeded", "failed"]).optional(),
            limit: pageLimit,
            cursor: uuidParam.optional().describe("the nextCursor of a previous page"),
          }),
          response: {
            200: z.object({ items: z.array(deliveryBody), nextCursor: z.string().nullable() }),
            ...errorResponses(...projectRouteErrors, "not_found"),
          },
        },
      },
      async (request) =>
        (await webhooks.deliveries(request.project.id, request.params.id, {
          status: request.query.status,
          after: request.query.cursor,
          limit: request.query.limit,
        })) ?? notFound(request.params.id),
    );

    app.post(
      "/webhooks/:id/deliveries/:deliveryId/replay",
      {
        schema: {
          tags: ["project"],
          summary: "Send a delivery again now (same body and webhook-id), from the first retry step",
          security: [{ bearer: [] }],
          params: webhookParams.extend({ deliveryId: uuidParam }),
          response: {
            202: deliveryBody,
            ...errorResponses(...projectRouteErrors, "not_found", "webhook_disabled"),
          },
        },
      },
      async (request, reply) => {
        const { id, deliveryId } = request.params;
        const outcome = await webhooks.replay(request.project.id, id, deliveryId, by(request));
        if (!outcome.ok) refused(outcome);
        return reply.status(202).send(outcome.value);
      },
    );

    app.post(
      "/webhooks/:id/replay",
      {
        schema: {
          tags: ["project"],
          summary: "Send again every delivery of the endpoint that failed, created since a time",
          security: [{ bearer: [] }],
          params: webhookParams,
          body: z.object({
            since: z.iso
              .datetime({ offset: true, error: "must be an ISO 8601 date-time" })
              .describe("deliveries created at or after this time"),
          }),
          response: {
            202: z.object({ replayed: z.number().describe("deliveries sent again") }),
            ...errorResponses(...projectRouteErrors, ...bodyErrors, "not_found", "webhook_disabled"),
          },
        },
      },
      async (request, reply) => {
        const outcome = await webhooks.replayFailedSince(
          request.project.id,
          request.params.id,
          new Date(request.body.since),
          by(request),
        );
        if (!outcome.ok) refused(outcome);
        return reply.status(202).send(outcome.value);
      },
    );
  };
}
