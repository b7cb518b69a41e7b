import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { type ApiTokenVerifier, hashApiToken } from "@postern/auth";
import type { Redis } from "@postern/queue";
import type { FastifyReply, FastifyRequest } from "fastify";
import { ApiError } from "./errors";

/**
 * Dashboard sessions. A browser exchanges a project API token or the operator token for a
 * session (`POST /session`) and from then on sends only a cookie: HttpOnly (no script reads it),
 * SameSite=Strict (no other site's page sends it), Secure when the page is served over TLS, with
 * the session's expiry. The token itself is never stored by the browser.
 *
 * A session lives in Redis under the SHA-256 of its id (a copy of Redis holds no usable cookie),
 * with a TTL of DASHBOARD_SESSION_HOURS, and names the token it came from by digest, never the
 * token. Every request made with it is checked as that token's bearer request would be: a project
 * token through the API's own `ApiTokenVerifier` (so its revocation, heard on the auth
 * invalidation channel, ends the session on every node at once), the operator token against the
 * current ADMIN_TOKEN (so rotating it ends operator sessions).
 */

export const sessionCookie = "postern_session";

/** Who a session speaks for: the project of a project token, or the operator. */
export type SessionHolder =
  | { kind: "project"; projectId: string; tokenId: string; expiresAt: Date }
  | { kind: "operator"; expiresAt: Date };

type StoredSession =
  | { kind: "project"; tokenDigest: string; expiresAt: string }
  | { kind: "operator"; adminDigest: string; expiresAt: string };

export interface DashboardSessions {
  /** Verifies `token` as the bearer routes would and opens a session for it (sets the cookie). */
  signIn(token: string, request: FastifyRequest, reply: FastifyReply): Promise<SessionHolder>;
  /**
   * The holder of the request's session cookie, checked now; undefined when the request has no
   * cookie. A session that has ended (expired, signed out, its token revoked) is `401`.
   */
  holder(request: FastifyRequest, reply: FastifyReply): Promise<SessionHolder | undefined>;
  signOut(request: FastifyRequest, reply: FastifyReply): Promise<void>;
}

const sha256 = (value: string) => createHash("sha256").update(value).digest("hex");
const sessionEnded = () =>
  new ApiError("unauthorized", "the dashboard session has ended (expired, signed out or its token revoked)");
const unknownToken = () =>
  new ApiError("unauthorized", "the token is not the operator token nor a valid API token");

export function createDashboardSessions(deps: {
  redis: Redis;
  keyPrefix: string;
  verifier: Pick<ApiTokenVerifier, "verify" | "verifyDigest">;
  adminToken: string;
  sessionMs: number;
}): DashboardSessions {
  const adminDigest = Buffer.from(sha256(deps.adminToken), "hex");
  const keyOf = (sessionId: string) => `${deps.keyPrefix}:dashboard-session:${sha256(sessionId)}`;

  const isOperatorDigest = (digest: string) => {
    const given = Buffer.from(digest, "hex");
    return given.length === adminDigest.length && timingSafeEqual(given, adminDigest);
  };

  /** Redis not answering is a temporary failure of sessions, not a wrong cookie. */
  async function redisCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw new ApiError(
        "sessions_unavailable",
        `dashboard sessions are unavailable: ${(error as Error).message}`,
      );
    }
  }

  function clearCookie(reply: FastifyReply) {
    reply.clearCookie(sessionCookie, { path: "/" });
  }

  return {
    async signIn(token, request, reply) {
      const expiresAt = new Date(Date.now() + deps.sessionMs);
      let stored: StoredSession;
      let holder: SessionHolder;
      const digest = sha256(token);
      if (isOperatorDigest(digest)) {
        stored = { kind: "operator", adminDigest: digest, expiresAt: expiresAt.toISOString() };
        holder = { kind: "operator", expiresAt };
      } else {
        const verification = await deps.verifier.verify(token);
        if (!verification.ok) {
          if (verification.reason === "unavailable") throw verification.error;
          throw unknownToken();
        }
        stored = { kind: "project", tokenDigest: hashApiToken(token), expiresAt: expiresAt.toISOString() };
        holder = { kind: "project", ...verification.value, expiresAt };
      }
      // A session the browser held before this sign-in ends with it: one browser, one session.
      const previous = request.cookies[sessionCookie];
      if (previous) await redisCall(() => deps.redis.del(keyOf(previous)));
      const sessionId = randomBytes(32).toString("base64url");
      await redisCall(() => deps.redis.set(keyOf(sessionId), JSON.stringify(stored), "PX", deps.sessionMs));
      reply.setCookie(sessionCookie, sessionId, {
        path: "/",
        httpOnly: true,
        sameSite: "strict",
        // The API listens on plain HTTP; behind a TLS-terminating proxy the browser's Origin says
        // the page is https, and a cookie it must only send back over TLS is then right.
        secure: request.protocol === "https" || request.headers.origin?.startsWith("https://") === true,
        expires: expiresAt,
      });
      return holder;
    },

    async holder(request, reply) {
      const sessionId = request.cookies[sessionCookie];
      if (!sessionId) return undefined;
      const raw = await redisCall(() => deps.redis.get(keyOf(sessionId)));
      if (!raw) {
        clearCookie(reply);
        throw sessionEnded();
      }
      const stored = JSON.parse(raw) as StoredSession;
      const expiresAt = new Date(stored.expiresAt);
      if (stored.kind === "operator") {
        if (isOperatorDigest(stored.adminDigest)) return { kind: "operator", expiresAt };
      } else {
        const verification = await deps.verifier.verifyDigest(stored.tokenDigest);
        if (verification.ok) return { kind: "project", ...verification.value, expiresAt };
        if (verification.reason === "unavailable") throw verification.error;
      }
      // Its token was revoked (or ADMIN_TOKEN changed): the session goes with it.
      await redisCall(() => deps.redis.del(keyOf(sessionId)));
      clearCookie(reply);
      throw sessionEnded();
    },

    async signOut(request, reply) {
      const sessionId = request.cookies[sessionCookie];
      if (sessionId) await redisCall(() => deps.redis.del(keyOf(sessionId)));
      clearCookie(reply);
    },
  };
}
