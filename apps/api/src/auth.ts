import { createHash, timingSafeEqual } from "node:crypto";
import type { ApiTokenVerifier } from "@postern/auth";
import type { Redis } from "@postern/queue";
import type { FastifyReply, FastifyRequest } from "fastify";
import { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { ApiError } from "./errors";
import { refuseCrossSiteRequest } from "./http-security";
import type { DashboardSessions } from "./sessions";

declare module "fastify" {
  interface FastifyRequest {
    /**
     * The project a `/v1` route acts on and who acts: set by the `/v1` auth hook (the token's
     * project, actor `token:<id>`) or, on `/admin/projects/:projectId/...`, by `adminProjectScope`
     * (tokenId null, actor `admin`).
     */
    project: { id: string; tokenId: string | null; actor: string };
  }
}

function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function sha256(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

const unauthorized = (message: string) => new ApiError("unauthorized", message);

/**
 * `/v1`: a project API token (checked and remembered by packages/auth's `ApiTokenVerifier`), or a
 * dashboard session opened with one (checked through the same verifier, and refused for a
 * cross-site request that would change something), then rate limited per token (429 with
 * Retry-After).
 */
export function projectTokenAuth(deps: {
  verifier: ApiTokenVerifier;
  sessions: DashboardSessions;
  redis: Redis;
  keyPrefix: string;
  rateLimitPerMinute: number;
}) {
  const limiter = new RateLimiterRedis({
    storeClient: deps.redis,
    keyPrefix: `${deps.keyPrefix}:api-rate`,
    points: deps.rateLimitPerMinute,
    duration: 60,
  });
  async function holderOf(request: FastifyRequest, reply: FastifyReply) {
    const token = bearer(request);
    if (token) {
      const verification = await deps.verifier.verify(token);
      if (!verification.ok) {
        if (verification.reason === "unavailable") throw verification.error;
        throw unauthorized("the API token is unknown or revoked");
      }
      return verification.value;
    }
    const session = await deps.sessions.holder(request, reply);
    if (!session) throw unauthorized("send a project API token as 'Authorization: Bearer <token>'");
    if (session.kind !== "project") {
      throw unauthorized("an operator session reaches a project's data under /admin/projects/:id");
    }
    refuseCrossSiteRequest(request);
    return session;
  }
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { tokenId, projectId } = await holderOf(request, reply);
    try {
      await limiter.consume(tokenId);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) {
        // Redis unavailable: reading stats must not fail because the limiter cannot count.
        request.log.warn({ err: rejection }, "API rate limiter unavailable; request allowed");
      } else {
        reply.header("Retry-After", Math.max(1, Math.ceil(rejection.msBeforeNext / 1000)));
        throw new ApiError("rate_limited", `more than ${deps.rateLimitPerMinute} requests per minute`);
      }
    }
    request.project = { id: projectId, tokenId, actor: `token:${tokenId}` };
  };
}

/**
 * `/admin`: the operator token, compared in constant time (digests, so lengths never differ), or
 * a dashboard session opened with it (refused for a cross-site request that would change
 * something).
 */
export function adminTokenAuth(adminToken: string, sessions: DashboardSessions) {
  const tokenAuth = sharedTokenAuth(adminToken, { what: "the operator token", variable: "ADMIN_TOKEN" });
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (bearer(request)) return tokenAuth(request);
    const session = await sessions.holder(request, reply);
    if (!session) return tokenAuth(request);
    if (session.kind !== "operator")
      throw unauthorized("a project session reaches only its project, under /v1");
    refuseCrossSiteRequest(request);
  };
}

/** `/metrics` when METRICS_TOKEN is set: Prometheus sends it with its `authorization` setting. */
export function metricsTokenAuth(metricsToken: string) {
  return sharedTokenAuth(metricsToken, { what: "the metrics token", variable: "METRICS_TOKEN" });
}

/** A token from the configuration, compared in constant time (digests, so lengths never differ). */
function sharedTokenAuth(expectedToken: string, names: { what: string; variable: string }) {
  const expected = sha256(expectedToken);
  return async (request: FastifyRequest) => {
    const token = bearer(request);
    if (!token) throw unauthorized(`send ${names.what} as 'Authorization: Bearer <${names.variable}>'`);
    if (!timingSafeEqual(sha256(token), expected)) throw unauthorized(`${names.what} is wrong`);
  };
}
