import {
  type ProjectService,
  projectDetailView,
  projectInputSchema,
  projectPatchSchema,
  projectView,
} from "@postern/projects";
import type { FastifyRequest } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { ApiError, adminRouteErrors, bodyErrors, errorResponses } from "../errors";
import { isoDate, projectSettingsJson, uuidParam } from "./schemas";

const projectJson = z.object({
  id: z.string(),
  name: z.string(),
  status: z.enum(["active", "suspended"]),
  upstream: z.string().describe("without its password"),
  quota: z.object({ perMinute: z.number(), daily: z.number() }),
  maxRecipients: z.number(),
  senderDomains: z.array(z.string()),
  ...projectSettingsJson.shape,
  requireVerifiedDomain: z.boolean(),
  localAddresses: z.array(z.string()).describe("source addresses of direct delivery, used in turn"),
  createdAt: isoDate,
  updatedAt: isoDate,
});

const usage = { createdAt: isoDate, lastUsedAt: isoDate.nullable(), revokedAt: isoDate.nullable() };

const projectDetail = projectJson.extend({
  credentials: z.array(z.object({ id: z.string(), username: z.string(), ...usage })),
  tokens: z.array(z.object({ id: z.string(), prefix: z.string(), ...usage })),
});

const issuedCredential = z.object({
  id: z.string(),
  username: z.string(),
  password: z.string().describe("shown only in this response"),
  createdAt: isoDate,
});

const issuedToken = z.object({
  id: z.string(),
  token: z.string().describe("shown only in this response"),
  prefix: z.string(),
  createdAt: isoDate,
});

const projectParams = z.object({ id: uuidParam });

const by = (request: FastifyRequest) => ({ actor: "admin", ip: request.ip });
const noProject = (id: string) => new ApiError("not_found", `no project ${id}`);
const adminSecurity = [{ admin: [] }];

/** `/admin/projects...`: the operator's management of projects, SMTP credentials and API tokens. */
export function adminProjectRoutes(projects: ProjectService): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      "/projects",
      {
        schema: {
          tags: ["admin"],
          summary: "Create a project with one SMTP credential and one API token (secrets shown once)",
          security: adminSecurity,
          body: projectInputSchema,
          response: {
            201: projectJson.extend({
              smtp: issuedCredential,
              apiToken: issuedToken,
            }),
            ...errorResponses(...adminRouteErrors, ...bodyErrors),
          },
        },
      },
      async (request, reply) => {
        const result = await projects.create(request.body, by(request));
        if (!result.ok) throw new ApiError("validation_error", `body.${result.message}`);
        return reply.status(201).send({
          ...projectView(result.value.project),
          smtp: { ...result.value.smtp, createdAt: result.value.smtp.createdAt.toISOString() },
          apiToken: { ...result.value.apiToken, createdAt: result.value.apiToken.createdAt.toISOString() },
        });
      },
    );

    app.get(
      "/projects",
      {
        schema: {
          tags: ["admin"],
          summary: "Every project, newest first",
          security: adminSecurity,
          response: {
            200: z.object({ items: z.array(projectJson) }),
            ...errorResponses(...adminRouteErrors),
          },
        },
      },
      async () => ({ items: (await projects.list()).map(projectView) }),
    );

    app.get(
      "/projects/:id",
      {
        schema: {
          tags: ["admin"],
          summary: "A project with its credentials and tokens (never their secrets)",
          security: adminSecurity,
          params: projectParams,
          response: { 200: projectDetail, ...errorResponses(...adminRouteErrors, "not_found") },
        },
      },
      async (request) => {
        const project = await projects.show(request.params.id);
        if (!project) throw noProject(request.params.id);
        return projectDetailView(project);
      },
    );

    app.patch(
      "/projects/:id",
      {
        schema: {
          tags: ["admin"],
          summary: "Change settings; `status` suspends or resumes",
          security: adminSecurity,
          params: projectParams,
          body: projectPatchSchema,
          response: { 200: projectJson, ...errorResponses(...adminRouteErrors, ...bodyErrors, "not_found") },
        },
      },
      async (request) => {
        const result = await projects.update(request.params.id, request.body, by(request));
        if (result.ok) return projectView(result.value);
        if (result.reason === "not_found") throw noProject(request.params.id);
        throw new ApiError("validation_error", `body.${result.message}`);
      },
    );

    app.delete(
      "/projects/:id",
      {
        schema: {
          tags: ["admin"],
          summary: "Delete a project; refused (409) while messages are queued or deferred unless force=true",
          security: adminSecurity,
          params: projectParams,
          querystring: z.object({ force: z.enum(["true", "false"]).default("false") }),
          response: {
            204: z.null(),
            ...errorResponses(...adminRouteErrors, "not_found", "messages_pending"),
          },
        },
      },
      async (request, reply) => {
        const result = await projects.delete(
          request.params.id,
          { force: request.query.force === "true" },
          by(request),
        );
        if (result.ok) return reply.status(204).send(null);
        if (result.reason === "not_found") throw noProject(request.params.id);
        throw new ApiError("messages_pending", result.message);
      },
    );

    app.post(
      "/projects/:id/credentials",
      {
        schema: {
          tags: ["admin"],
          summary: "Issue another SMTP credential (password shown once)",
          security: adminSecurity,
          params: projectParams,
          response: { 201: issuedCredential, ...errorResponses(...adminRouteErrors, "not_found") },
        },
      },
      async (request, reply) => {
        const issued = await projects.createCredential(request.params.id, by(request));
        if (!issued) throw noProject(request.params.id);
        return reply.status(201).send({ ...issued, createdAt: issued.createdAt.toISOString() });
      },
    );

    app.delete(
      "/projects/:id/credentials/:credentialId",
      {
        schema: {
          tags: ["admin"],
          summary: "Revoke an SMTP credential at once, on every SMTP node",
          security: adminSecurity,
          params: z.object({ id: uuidParam, credentialId: uuidParam }),
          response: {
            200: z.object({ id: z.string(), revokedAt: isoDate }),
            ...errorResponses(...adminRouteErrors, "not_found"),
          },
        },
      },
      async (request) => {
        const result = await projects.revokeCredential(
          request.params.id,
          request.params.credentialId,
          by(request),
        );
        if (!result.ok) throw new ApiError("not_found", result.message);
        return { id: request.params.credentialId, revokedAt: result.value.revokedAt.toISOString() };
      },
    );

    app.post(
      "/projects/:id/tokens",
      {
        schema: {
          tags: ["admin"],
          summary: "Issue another project API token (shown once)",
          security: adminSecurity,
          params: projectParams,
          response: { 201: issuedToken, ...errorResponses(...adminRouteErrors, "not_found") },
        },
      },
      async (request, reply) => {
        const issued = await projects.createToken(request.params.id, by(request));
        if (!issued) throw noProject(request.params.id);
        return reply.status(201).send({ ...issued, createdAt: issued.createdAt.toISOString() });
      },
    );

    app.delete(
      "/projects/:id/tokens/:tokenId",
      {
        schema: {
          tags: ["admin"],
          summary: "Revoke a project API token",
          security: adminSecurity,
          params: z.object({ id: uuidParam, tokenId: uuidParam }),
          response: {
            200: z.object({ id: z.string(), revokedAt: isoDate }),
            ...errorResponses(...adminRouteErrors, "not_found"),
          },
        },
      },
      async (request) => {
        const result = await projects.revokeToken(request.params.id, request.params.tokenId, by(request));
        if (!result.ok) throw new ApiError("not_found", result.message);
        return { id: request.params.tokenId, revokedAt: result.value.revokedAt.toISOString() };
      },
    );
  };
}
