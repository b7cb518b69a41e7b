import { type Database, sqlPoolOf } from "@postern/db";
import type { FastifyError, FastifyInstance } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { z } from "zod";
import { check } from "./check";

/**
 * Every error the API answers, in one table: its code, its HTTP status and what it means (as
 * Fastify keeps its own in lib/errors.js). A reply is `{ "error": { "code", "message" } }`: the
 * code is for programs, the message for people and names the field or resource. Routes declare
 * the codes they answer with `errorResponses`, so the OpenAPI document lists them; docs/api.md's
 * table is generated from this one (`npm run docs:api`).
 */
export const apiErrors = {
  validation_error: {
    status: 400,
    meaning:
      "a parameter, header or body field is invalid (the message names it, e.g. `querystring.limit: …`); a NUL character anywhere in a body, query or path; a body that is not JSON",
  },
  unauthorized: {
    status: 401,
    meaning:
      "no token, an unknown or revoked token, or a project token on `/admin`; on `/metrics`, no or a wrong `METRICS_TOKEN` when it is set",
  },
  not_found: {
    status: 404,
    meaning:
      "no such resource **for this caller** (another project's ids are 404, never 403), or no such route",
  },
  invalid_transition: {
    status: 409,
    meaning:
      "the message's status does not allow the action (e.g. a retry of a message that is not `deferred` or `failed`, a cancel of one that is not `queued`, `deferred` or `held`, an approve or deny of one that is not `held`); the message names the status",
  },
  domain_exists: {
    status: 409,
    meaning: "`POST /v1/domains`: the domain is already one of the project's domains",
  },
  rotation_pending: {
    status: 409,
    meaning:
      "`POST /v1/domains/:id/rotate`: the domain's newest key is not active yet (publish its record and verify first)",
  },
  invalid_key: {
    status: 422,
    meaning:
      "`POST /v1/domains`: `privateKey` is not a PEM private key, not RSA (1024–4096 bits) or Ed25519, or not of the given `algorithm`",
  },
  messages_pending: {
    status: 409,
    meaning: "a project still has `queued`, `deferred` or `held` messages and `force=true` was not given",
  },
  version_conflict: {
    status: 409,
    meaning:
      "a `PUT` of a versioned list (`/v1/rules`, `/v1/routes`) named a `version` that is no longer the current one: someone changed it since it was read; read it again (the message names the current version)",
  },
  invalid_routes: {
    status: 422,
    meaning:
      "`PUT /v1/routes`: a route's upstream URL is invalid, or a pattern appears twice (the message names it)",
  },
  invalid_webhook_url: {
    status: 422,
    meaning:
      "`POST`/`PATCH /v1/webhooks`: the URL's host does not resolve, or resolves to a loopback, private, link-local or other non-public address while `WEBHOOK_ALLOW_PRIVATE` is off (the message names the address)",
  },
  webhook_disabled: {
    status: 409,
    meaning:
      '`/v1/webhooks/:id/test` and replays: the endpoint is disabled (by its project, or after failing for `WEBHOOK_DISABLE_AFTER`); enable it with `PATCH {"enabled": true}` first',
  },
  gone: {
    status: 410,
    meaning: "the resource existed but is no longer kept (a message's bytes past `BODY_RETENTION_DAYS`)",
  },
  payload_too_large: {
    status: 413,
    meaning: "the request body is larger than the route accepts (1 MiB for JSON bodies)",
  },
  unsupported_media_type: {
    status: 415,
    meaning: "the request body's `Content-Type` is not one the route reads (`application/json`)",
  },
  idempotency_key_reused: {
    status: 422,
    meaning: "an `Idempotency-Key` used within 24 h with another body",
  },
  invalid_rules: {
    status: 422,
    meaning:
      "`PUT /v1/rules`: the rules are not valid (the message names the field, e.g. `rules.2.match.to: …`)",
  },
  rule_denied: {
    status: 403,
    meaning:
      "HTTP submission: a rule of the project denies the message (the message names the rule); as SMTP's `550 5.7.1`",
  },
  project_suspended: { status: 403, meaning: "HTTP submission: the project is suspended" },
  sender_not_allowed: {
    status: 403,
    meaning:
      "HTTP submission: the envelope sender's or the `From` header's domain is not one of the project's sender domains",
  },
  domain_not_verified: {
    status: 403,
    meaning:
      "HTTP submission: the project requires a verified domain (`requireVerifiedDomain`) and the `From` header's domain is not one (`/v1/domains`)",
  },
  invalid_sender: { status: 422, meaning: "HTTP submission: the sender address is not a valid mailbox" },
  invalid_recipient: { status: 422, meaning: "HTTP submission: a recipient address is not a valid mailbox" },
  recipients_suppressed: {
    status: 422,
    meaning:
      "HTTP submission: every recipient is on the project's suppressions (`/v1/suppressions`; the message names each and the reason); with some recipients not suppressed, the message is accepted for those",
  },
  too_many_recipients: {
    status: 422,
    meaning: "HTTP submission: more recipients than the project's `maxRecipients`",
  },
  invalid_line_endings: {
    status: 422,
    meaning: "HTTP submission: a bare CR, or a line of one dot next to a bare LF, in a raw message",
  },
  invalid_message: {
    status: 422,
    meaning:
      "HTTP submission: the JSON, a header, the query or the message itself is not valid (the message names the field)",
  },
  message_too_large: {
    status: 413,
    meaning: "HTTP submission: the message is larger than `MAX_MESSAGE_SIZE`",
  },
  quota_exceeded: {
    status: 429,
    meaning: "HTTP submission: the project's per-minute or daily quota is spent; see `Retry-After`",
  },
  store_unavailable: {
    status: 503,
    meaning:
      "HTTP submission: PostgreSQL or Redis cannot take the message now; nothing was stored, try again",
  },
  cross_site_request: {
    status: 403,
    meaning:
      "a request with a dashboard session cookie that would change something came from another origin (`Sec-Fetch-Site` or `Origin`; docs/security.md, Dashboard)",
  },
  replica_unavailable: {
    status: 503,
    meaning:
      "a history read (messages, events, stats, audit log, suppressions list) goes to the read replica (`DATABASE_REPLICA_URL`), which does not answer; writes and the other reads still work",
  },
  sessions_unavailable: {
    status: 503,
    meaning: "dashboard sessions are kept in Redis, which does not answer; bearer tokens still work",
  },
  rate_limited: {
    status: 429,
    meaning: "more than `API_RATE_LIMIT` requests per minute with one token; see `Retry-After`",
  },
  internal_error: {
    status: 500,
    meaning: "a bug; logged with the request id, details never sent to the client",
  },
} as const satisfies Record<string, { status: number; meaning: string }>;

export type ApiErrorCode = keyof typeof apiErrors;

export const apiErrorCodes = Object.keys(apiErrors) as ApiErrorCode[];

/** The one error shape of the API: `{ "error": { "code", "message" } }`. */
export interface ApiErrorBody {
  error: { code: ApiErrorCode; message: string };
}

/** An expected refusal of a request, answered with its code's status from `apiErrors`. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly statusCode: number;

  constructor(
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
    this.statusCode = apiErrors[code].status;
  }
}

/**
 * Response schemas for the codes a route answers, one per status (a status shared by several
 * codes lists them all), so the OpenAPI document names each route's possible errors.
 */
export function errorResponses(...codes: ApiErrorCode[]): Record<number, z.ZodType<ApiErrorBody>> {
  const byStatus = new Map<number, ApiErrorCode[]>();
  for (const code of new Set(codes)) {
    const { status } = apiErrors[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  return Object.fromEntries(
    [...byStatus].map(([status, list]) => [
      status,
      z
        .object({
          error: z.object({ code: z.enum(list as [ApiErrorCode, ...ApiErrorCode[]]), message: z.string() }),
        })
        .describe(list.map((code) => `\`${code}\`: ${apiErrors[code].meaning}`).join("; ")),
    ]),
  );
}

/**
 * Codes any route of a group can answer whatever its handler does: the NUL check and schema
 * validation, the group's authentication (and `/v1`'s rate limit), a bug.
 */
export const projectRouteErrors = [
  "validation_error",
  "unauthorized",
  "rate_limited",
  "internal_error",
] as const;
export const adminRouteErrors = ["validation_error", "unauthorized", "internal_error"] as const;
/** What Fastify answers for a body before the route's schema sees it. */
export const bodyErrors = ["payload_too_large", "unsupported_media_type"] as const;

/** Fastify's own refusals (an unparsable body, one too large…) by status, in the API's codes. */
const fastifyRefusals: Partial<Record<number, ApiErrorCode>> = {
  400: "validation_error",
  404: "not_found",
  413: "payload_too_large",
  415: "unsupported_media_type",
};

function send(
  reply: { status(code: number): { send(body: ApiErrorBody): unknown } },
  code: ApiErrorCode,
  message: string,
) {
  return reply.status(apiErrors[code].status).send({ error: { code, message } });
}

export function installErrorHandling(app: FastifyInstance, options: { replica?: Database } = {}): void {
  const { replica } = options;
  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (error instanceof ApiError) return send(reply, error.code, error.message);
    if (hasZodFastifySchemaValidationErrors(error)) {
      const issue = error.validation[0];
      const field = [error.validationContext, ...(issue?.instancePath.split("/").filter(Boolean) ?? [])].join(
        ".",
      );
      return send(reply, "validation_error", `${field}: ${issue?.message ?? "invalid"}`);
    }
    const refusal =
      error.statusCode && error.statusCode < 500 ? fastifyRefusals[error.statusCode] : undefined;
    if (refusal) return send(reply, refusal, error.message);
    if (error.statusCode && error.statusCode < 500) {
      // A client error this table does not name yet: answered as a validation error, and logged
      // so that it gets a code of its own.
      request.log.warn({ err: error }, "client error without an API error code");
      return send(reply, "validation_error", error.message);
    }
    // A read of the replica failed: when the replica is what does not answer, say so (the client
    // can retry; the primary, SMTP and delivery are not affected).
    if (replica && request.routeOptions.config.readsReplica) {
      const replicaState = await check(() => sqlPoolOf(replica).query("SELECT 1"));
      if (replicaState !== "ok") {
        // Why goes to the log (and to /health/ready): the client is not told the replica's address.
        request.log.warn({ err: error, replica: replicaState }, "the read replica does not answer");
        return send(
          reply,
          "replica_unavailable",
          "the read replica does not answer; try again later (writes and the other reads still work)",
        );
      }
    }
    request.log.error({ err: error }, "request failed");
    return send(reply, "internal_error", "internal error");
  });
  app.setNotFoundHandler((request, reply) =>
    send(reply, "not_found", `no route ${request.method} ${request.url.split("?")[0]}`),
  );
}
