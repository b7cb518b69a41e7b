import type { DomainService, DomainView } from "@postern/dkim";
import { domainName } from "@postern/projects";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { ApiError, bodyErrors, errorResponses, projectRouteErrors } from "../errors";
import { isoDate, uuidParam } from "./schemas";

const algorithm = z
  .enum(["rsa", "ed25519"])
  .optional()
  .describe(
    "of a generated key: `rsa` (2048 bits, the default) or `ed25519`; with `privateKey`, must match it",
  );
const privateKey = z
  .string()
  .min(1)
  .max(16_384)
  .optional()
  .describe(
    "a private key to import (PEM: RSA 1024–4096 bits or Ed25519) instead of generating one; never returned",
  );

const record = z.object({
  purpose: z
    .enum(["dkim", "spf", "dmarc", "return-path"])
    .describe("`return-path` (with BOUNCE_DOMAIN): the bounce domain's MX and SPF records, for VERP"),
  type: z.enum(["TXT", "MX"]).describe("`MX`: value is `<preference> <host>`"),
  name: z.string(),
  value: z.string(),
  selector: z.string().optional().describe("the DKIM key's selector (dkim records)"),
});

const domainBody = z.object({
  id: z.string(),
  domain: z.string(),
  verified: z.boolean().describe("a verify has found the DKIM record of one of its keys"),
  verifiedAt: isoDate.nullable(),
  createdAt: isoDate,
  keys: z.array(
    z.object({
      selector: z.string(),
      algorithm: z.enum(["rsa", "ed25519"]),
      status: z
        .enum(["active", "pending"])
        .describe("`active` keys sign (the newest); `pending` wait for a verify"),
      createdAt: isoDate,
      activatedAt: isoDate.nullable(),
    }),
  ),
  records: z.array(record).describe("the DNS records to publish"),
});

const verifyBody = domainBody.extend({
  records: z.array(
    record.extend({
      state: z
        .enum(["ok", "wrong", "missing", "lookup_failed"])
        .describe("as found in DNS; `lookup_failed`: DNS did not answer"),
      found: z
        .array(z.string())
        .describe("the TXT values (MX: the exchanges) found at the name that bear on the record"),
    }),
  ),
  activated: z.array(z.string()).describe("selectors whose key became active with this verify"),
});

function domainJson(domain: DomainView) {
  return {
    ...domain,
    verifiedAt: domain.verifiedAt?.toISOString() ?? null,
    createdAt: domain.createdAt.toISOString(),
    keys: domain.keys.map((key) => ({
      ...key,
      createdAt: key.createdAt.toISOString(),
      activatedAt: key.activatedAt?.toISOString() ?? null,
    })),
  };
}

const notFound = (id: string) => new ApiError("not_found", `no domain ${id}`);
const idParams = z.object({ id: uuidParam });

/** `/v1/domains`: a project's sending domains, their DKIM keys and the DNS records to publish. */
export function domainRoutes(domains: DomainService): FastifyPluginAsyncZod {
  return async (app) => {
    const by = (request: { project: { actor: string }; ip: string }) => ({
      actor: request.project.actor,
      ip: request.ip,
    });

    app.post(
      "/domains",
      {
        schema: {
          tags: ["project"],
          summary: "Add a sending domain with a DKIM key; answers the DNS records to publish",
          security: [{ bearer: [] }],
          body: z.object({ domain: domainName, algorithm, privateKey }),
          response: {
            201: domainBody,
            ...errorResponses(...projectRouteErrors, ...bodyErrors, "domain_exists", "invalid_key"),
          },
        },
      },
      async (request, reply) => {
        const result = await domains.create(request.project.id, request.body, by(request));
        if (!result.ok) throw new ApiError(result.reason, result.message);
        return reply.status(201).send(domainJson(result.value));
      },
    );

    app.get(
      "/domains",
      {
        schema: {
          tags: ["project"],
          summary: "The project's sending domains",
          security: [{ bearer: [] }],
          response: {
            200: z.object({ items: z.array(domainBody) }),
            ...errorResponses(...projectRouteErrors),
          },
        },
      },
      async (request) => ({ items: (await domains.list(request.project.id)).map(domainJson) }),
    );

    app.get(
      "/domains/:id",
      {
        schema: {
          tags: ["project"],
          summary: "A sending domain, its keys and its DNS records",
          security: [{ bearer: [] }],
          params: idParams,
          response: { 200: domainBody, ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request) => {
        const domain = await domains.get(request.project.id, request.params.id);
        if (!domain) throw notFound(request.params.id);
        return domainJson(domain);
      },
    );

    app.delete(
      "/domains/:id",
      {
        schema: {
          tags: ["project"],
          summary: "Remove a sending domain and its keys (its messages are no longer signed)",
          security: [{ bearer: [] }],
          params: idParams,
          response: { 204: z.null(), ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request, reply) => {
        if (!(await domains.remove(request.project.id, request.params.id, by(request))))
          throw notFound(request.params.id);
        return reply.status(204).send(null);
      },
    );

    app.post(
      "/domains/:id/verify",
      {
        schema: {
          tags: ["project"],
          summary: "Look the domain's records up in DNS; a key whose DKIM record is found becomes active",
          security: [{ bearer: [] }],
          params: idParams,
          response: { 200: verifyBody, ...errorResponses(...projectRouteErrors, "not_found") },
        },
      },
      async (request) => {
        const result = await domains.verify(request.project.id, request.params.id, by(request));
        if (!result) throw notFound(request.params.id);
        return { ...domainJson(result.domain), records: result.records, activated: result.activated };
      },
    );

    app.post(
      "/domains/:id/rotate",
      {
        schema: {
          tags: ["project"],
          summary:
            "Add the next DKIM key under the free selector; the current key signs until it is verified",
          security: [{ bearer: [] }],
          params: idParams,
          // Fastify hands a request without a body over as null: `curl -X POST` rotates to RSA.
          body: z.object({ algorithm, privateKey }).nullish(),
          response: {
            200: domainBody,
            ...errorResponses(
              ...projectRouteErrors,
              ...bodyErrors,
              "not_found",
              "rotation_pending",
              "invalid_key",
            ),
          },
        },
      },
      async (request) => {
        const result = await domains.rotate(
          request.project.id,
          request.params.id,
          request.body ?? {},
          by(request),
        );
        if (!result.ok) throw new ApiError(result.reason, result.message);
        return domainJson(result.value);
      },
    );
  };
}
