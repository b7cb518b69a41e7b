import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { ApiError, errorResponses } from "../errors";
import { noStore, refuseCrossSiteRequest } from "../http-security";
import type { DashboardSessions, SessionHolder } from "../sessions";
import { isoDate } from "./schemas";

const sessionJson = z.object({
  kind: z.enum(["project", "operator"]),
  projectId: z
    .string()
    .nullable()
    .describe("the project of a project token's session; null for the operator"),
  expiresAt: isoDate,
});

const view = (holder: SessionHolder) => ({
  kind: holder.kind,
  projectId: holder.kind === "project" ? holder.projectId : null,
  expiresAt: holder.expiresAt.toISOString(),
});

const sessionErrors = ["validation_error", "unauthorized", "sessions_unavailable", "internal_error"] as const;

/**
 * `/session`: the dashboard's sign-in (a token for a session cookie), who is signed in, sign-out.
 * Any client may use it; the cookie then authenticates `/v1` (project token) or `/admin`
 * (operator token) exactly as the token would.
 */
export function sessionRoutes(sessions: DashboardSessions): FastifyPluginAsyncZod {
  return async (app) => {
    app.addHook("onRequest", noStore);

    app.post(
      "/session",
      {
        schema: {
          tags: ["session"],
          summary: "Sign in to the dashboard: a project API token or the operator token for a session cookie",
          body: z.object({ token: z.string().min(1).max(512) }),
          response: {
            201: sessionJson,
            ...errorResponses(
              ...sessionErrors,
              "cross_site_request",
              "payload_too_large",
              "unsupported_media_type",
            ),
          },
        },
      },
      async (request, reply) => {
        // Another origin's page must not sign the browser in as someone else either.
        refuseCrossSiteRequest(request);
        const holder = await sessions.signIn(request.body.token, request, reply);
        return reply.status(201).send(view(holder));
      },
    );

    app.get(
      "/session",
      {
        schema: {
          tags: ["session"],
          summary: "The dashboard session of this browser: who it speaks for and until when",
          response: { 200: sessionJson, ...errorResponses(...sessionErrors) },
        },
      },
      async (request, reply) => {
        const holder = await sessions.holder(request, reply);
        if (!holder) throw new ApiError("unauthorized", "not signed in");
        return view(holder);
      },
    );

    app.delete(
      "/session",
      {
        schema: {
          tags: ["session"],
          summary: "Sign out: the session ends on the server and its cookie is cleared",
          response: { 204: z.null(), ...errorResponses(...sessionErrors, "cross_site_request") },
        },
      },
      async (request, reply) => {
        refuseCrossSiteRequest(request);
        await sessions.signOut(request, reply);
        return reply.status(204).send(null);
      },
    );
  };
}
