import {
  type SuppressionService,
  suppressionAddress,
  suppressionInputSchema,
  suppressionReasons,
} from "@postern/projects";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { ApiError, bodyErrors, errorResponses, projectRouteErrors } from "../errors";
import { replicaRead } from "../replica";
import { isoDate, pageLimit } from "./schemas";

const suppressionBody = z.object({
  address: z.string().describe("lower-case; `*@domain`: every address of the domain"),
  reason: z.enum(suppressionReasons),
  sourceMessageId: z.string().nullable().describe("the message whose failure added it"),
  expiresAt: isoDate.nullable(),
  createdAt: isoDate,
  updatedAt: isoDate,
});

/**
 * `/v1/suppressions` (docs/suppressions.md): the addresses and domains the project does not send
 * to. Registered under `/admin/projects/:projectId` too (admin-messages.ts).
 */
export function suppressionRoutes(suppressions: SuppressionService): FastifyPluginAsyncZod {
  return async (app) => {
    const by = (request: { project: { actor: string }; ip: string }) => ({
      actor: request.project.actor,
      ip: request.ip,
    });

    app.get(
      "/suppressions",
      {
        ...replicaRead,
        schema: {
          tags: ["project"],
          summary: "The project's suppressions in effect, by address",
          security: [{ bearer: [] }],
          querystring: z.object({
            q: z.string().max(320).optional().describe("only addresses containing this text"),
            limit: pageLimit,
            cursor: z.string().max(320).optional().describe("the nextCursor of a previous page"),
          }),
          response: {
            200: z.object({ items: z.array(suppressionBody), nextCursor: z.string().nullable() }),
            ...errorResponses(...projectRouteErrors, "replica_unavailable"),
          },
        },
      },
      async (request) =>
        suppressions.list(request.project.id, {
          q: request.query.q,
          after: request.query.cursor,
          limit: request.query.limit,
        }),
    );

    app.post(
      "/suppressions",
      {
        schema: {
          tags: ["project"],
          summary: "Suppress an address, or every address of a domain (`*@domain`)",
          description:
            "Mail to it is refused at RCPT with 550 5.7.1 and left out of HTTP submissions. " +
            "An address already suppressed gets the new reason and expiry.",
          security: [{ bearer: [] }],
          body: suppressionInputSchema,
          response: {
            201: suppressionBody,
            ...errorResponses(...projectRouteErrors, ...bodyErrors, "not_found"),
          },
        },
      },
      async (request, reply) => {
        const { address, reason, expiresAt } = request.body;
        const outcome = await suppressions.add(
          request.project.id,
          [{ address, reason, expiresAt: expiresAt ? new Date(expiresAt) : null }],
          by(request),
        );
        const item = outcome?.items[0];
        if (!item) throw new ApiError("not_found", `no project ${request.project.id}`);
        return reply.status(201).send(item);
      },
    );

    app.delete(
      "/suppressions/:address",
      {
        schema: {
          tags: ["project"],
          summary: "Remove a suppression: the address (or domain) gets mail again",
          security: [{ bearer: [] }],
          params: z.object({ address: suppressionAddress }),
          response: { 204: z.null(), ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request, reply) => {
        const { address } = request.params;
        if (!(await suppressions.remove(request.project.id, address, by(request))))
          throw new ApiError("not_found", `no suppression of ${address}`);
        return reply.status(204).send(null);
      },
    );
  };
}
