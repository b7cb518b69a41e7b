import { type ProjectService, projectDetailView, projectSettingsView } from "@postern/projects";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, errorResponses, projectRouteErrors } from "../errors";
import { isoDate, projectSettingsJson } from "./schemas";

/**
 * `GET /v1/project`: the calling project's own settings, so that an application can see what its
 * operator set (limits, sender domains, holds, duplicates, sandbox), and its SMTP credentials and
 * API tokens (their public parts: which exist, when last used). Never the upstream: its URL names
 * the upstream account, which is the operator's business. Issuing and revoking secrets stays the
 * operator's (`/admin`): a leaked token that could mint others would outlive its revocation.
 */
const usage = { createdAt: isoDate, lastUsedAt: isoDate.nullable(), revokedAt: isoDate.nullable() };

function secretsInUse(project: Parameters<typeof projectDetailView>[0]) {
  const { credentials, tokens } = projectDetailView(project);
  return { credentials, tokens };
}

export function projectRoutes(deps: RouteDependencies & { projects: ProjectService }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      "/project",
      {
        schema: {
          tags: ["project"],
          summary: "The project's own settings",
          security: [{ bearer: [] }],
          response: {
            200: z.object({
              id: z.string(),
              name: z.string(),
              status: z.enum(["active", "suspended"]),
              quota: z.object({ perMinute: z.number(), daily: z.number() }),
              maxRecipients: z.number(),
              senderDomains: z.array(z.string()),
              ...projectSettingsJson.shape,
              createdAt: isoDate,
              credentials: z
                .array(z.object({ id: z.string(), username: z.string(), ...usage }))
                .describe("the SMTP credentials, never their passwords"),
              tokens: z
                .array(z.object({ id: z.string(), prefix: z.string(), ...usage }))
                .describe("the API tokens by their first characters, never the tokens"),
            }),
            ...errorResponses(...projectRouteErrors, "not_found"),
          },
        },
      },
      async (request) => {
        const project = await deps.projects.show(request.project.id);
        // Its token was valid a moment ago: the project was deleted since.
        if (!project) throw new ApiError("not_found", `no project ${request.project.id}`);
        return {
          id: project.id,
          name: project.name,
          status: project.status,
          quota: { perMinute: project.quotaPerMinute, daily: project.quotaDaily },
          maxRecipients: project.maxRecipients,
          senderDomains: project.senderDomains,
          ...projectSettingsView(project),
          createdAt: project.createdAt.toISOString(),
          ...secretsInUse(project),
        };
      },
    );
  };
}
