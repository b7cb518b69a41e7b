import { type RulesCache, readRuleSet, replaceRuleSet, ruleSchema, ruleSetInputSchema } from "@postern/rules";
import type { FastifyError } from "fastify";
import { type FastifyPluginAsyncZod, hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { z } from "zod";
import type { RouteDependencies } from "../app";
import { ApiError, bodyErrors, errorResponses, projectRouteErrors } from "../errors";

const ruleSetView = z.object({
  version: z.number().describe("changes with every PUT; give it back to change the rules"),
  rules: z.array(ruleSchema),
});

/**
 * `GET|PUT /rules` of the project API: the project's ordered rules (docs/rules.md), replaced as a
 * whole against the version the caller read (`409 rules_version_conflict` when another change came
 * first). Registered under `/admin/projects/:projectId` too (admin-messages.ts).
 */
export function rulesRoutes(deps: RouteDependencies & { rules: RulesCache }): FastifyPluginAsyncZod {
  return async (app) => {
    // Invalid rules are 422 naming the field (`rules.2.match.to: …`), as invalid submissions are.
    app.setErrorHandler((error: FastifyError) => {
      if (hasZodFastifySchemaValidationErrors(error) && error.validationContext === "body") {
        const issue = error.validation[0];
        const field = issue?.instancePath.split("/").filter(Boolean).join(".") || "body";
        throw new ApiError("invalid_rules", `${field}: ${issue?.message ?? "invalid"}`);
      }
      throw error;
    });

    app.get(
      "/rules",
      {
        schema: {
          tags: ["project"],
          summary: "The project's rules, in the order they are judged, and their version",
          security: [{ bearer: [] }],
          response: { 200: ruleSetView, ...errorResponses(...projectRouteErrors) },
        },
      },
      async (request) => readRuleSet(deps.db, request.project.id),
    );

    app.put(
      "/rules",
      {
        schema: {
          tags: ["project"],
          summary: "Replace the project's rules",
          description:
            "The first rule whose every condition holds decides (allow, hold or deny); no rule holding " +
            "allows. `version` is the one GET /v1/rules answered: if the rules changed since, nothing " +
            "changes and the answer is 409. Takes effect on every node at once.",
          security: [{ bearer: [] }],
          body: ruleSetInputSchema,
          response: {
            200: ruleSetView,
            ...errorResponses(
              ...projectRouteErrors,
              ...bodyErrors,
              "invalid_rules",
              "rules_version_conflict",
            ),
          },
        },
      },
      async (request) => {
        const outcome = await replaceRuleSet(
          { db: deps.db, redis: deps.redis, keyPrefix: deps.config.redisKeyPrefix },
          request.project.id,
          request.body,
          { actor: request.project.actor, ip: request.ip },
        );
        // This process's own cache at once; the others hear of it over Redis.
        if (outcome.ok) {
          deps.rules.invalidate(request.project.id);
          return outcome.value;
        }
        throw new ApiError(
          outcome.reason === "not_found" ? "not_found" : "rules_version_conflict",
          outcome.message,
        );
      },
    );
  };
}
