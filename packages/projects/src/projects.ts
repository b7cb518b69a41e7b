import { recordAudit } from "@postern/audit";
// The modules this package uses, not the package index: that brings the SMTP credential verifier
// (rate-limiter-flexible) to every operator command.
import { type AuthInvalidation, publishAuthInvalidation } from "@postern/auth/invalidation";
import { issueApiToken, issueSmtpCredential } from "@postern/auth/keys";
import { sealSecret } from "@postern/auth/secretbox";
import { type Database, type Project, sqlPoolOf } from "@postern/db";
import { countPendingMessages } from "@postern/messages";
import type { Redis } from "@postern/queue";
// The URL parser alone: the package index brings the SMTP client and MTA-STS to operator commands.
import { parseUpstreamUrl, UpstreamUrlError } from "@postern/relay/upstream";
import { ok, type Result, refuse } from "@postern/result";
import { unusableLocalAddress } from "./local-addresses";

/**
 * Project, credential and token management: the one implementation behind both `/admin` and the
 * `postern` CLI. Every change writes its audit event in the transaction that makes it, and every
 * change that can invalidate a cached SMTP authentication is announced to every SMTP node.
 */
export interface ProjectServiceDeps {
  db: Database;
  redis: Redis;
  config: { encryptionKey: Buffer; redisKeyPrefix: string };
  /**
   * This process's own caches, dropped before the change is published: the node that made a
   * change never answers from what it replaced, even for the moment Redis takes to deliver.
   */
  localCaches?: { invalidate(event: AuthInvalidation): void }[];
}

/** `timestamp` columns hold UTC (as Prisma writes them): read as epoch milliseconds, whatever the session's time zone. */
const utcMillis = (column: string) => `(extract(epoch from "${column}") * 1000)::float8 AS "${column}"`;

/**
 * Every column of Project, keyed by the model's fields: a field added to the model fails the
 * typecheck here until it is listed. The listing reads them through node-postgres, not Prisma:
 * it is one fixed statement, and `postern project list` then never compiles Prisma's query
 * compiler (WebAssembly), which was most of that command's time.
 */
const projectColumns = {
  id: `"id"`,
  name: `"name"`,
  status: `"status"`,
  quotaPerMinute: `"quotaPerMinute"`,
  quotaDaily: `"quotaDaily"`,
  maxRecipients: `"maxRecipients"`,
  senderDomains: `"senderDomains"`,
  upstreamUrl: `"upstreamUrl"`,
  upstreamSecret: `"upstreamSecret"`,
  mode: `"mode"`,
  holdTtlMinutes: `"holdTtlMinutes"`,
  holdExpiry: `"holdExpiry"`,
  dedupWindowSeconds: `"dedupWindowSeconds"`,
  routes: `"routes"`,
  routesVersion: `"routesVersion"`,
  requireVerifiedDomain: `"requireVerifiedDomain"`,
  autoSuppress: `"autoSuppress"`,
  suppressionsVersion: `"suppressionsVersion"`,
  returnPath: `"returnPath"`,
  localAddresses: `"localAddresses"`,
  createdAt: utcMillis("createdAt"),
  updatedAt: utcMillis("updatedAt"),
} satisfies Record<keyof Project, string>;

type ProjectRow = Omit<Project, "createdAt" | "updatedAt"> & { createdAt: number; updatedAt: number };

const listProjectsStatement = `SELECT ${Object.values(projectColumns).join(", ")} FROM "Project" ORDER BY "Project"."createdAt" DESC, "Project"."id" DESC`;

/** Who asks, for the audit trail. */
export interface Actor {
  actor: string;
  ip?: string | null;
}

/** Defaults for a project created without them: generous enough for a trial, small enough to stop a runaway loop. */
export const projectDefaults = { quotaPerMinute: 600, quotaDaily: 100_000, maxRecipients: 50 } as const;

export interface ProjectInput {
  name: string;
  upstream: string;
  quota?: { perMinute?: number; daily?: number };
  senderDomains?: string[];
  maxRecipients?: number;
}

export interface ProjectPatch {
  name?: string;
  upstream?: string;
  quota?: { perMinute?: number; daily?: number };
  senderDomains?: string[];
  maxRecipients?: number;
  status?: "active" | "suspended";
  requireVerifiedDomain?: boolean;
  mode?: "live" | "sandbox";
  holdTtlMinutes?: number;
  holdExpiry?: "approve" | "deny";
  dedupWindowSeconds?: number;
  autoSuppress?: boolean;
  returnPath?: "sender" | "verp";
  /** Source addresses of direct delivery, used in turn; each must be an address of this host. */
  localAddresses?: string[];
}

/** A refusal's `message` names the problem for the operator (API message, CLI error line). */
type Explained = { message: string };

export interface IssuedCredential {
  id: string;
  username: string;
  /** Shown once: only its bcrypt hash is stored. */
  password: string;
  createdAt: Date;
}

export interface IssuedToken {
  id: string;
  /** Shown once: only its SHA-256 is stored. */
  token: string;
  prefix: string;
  createdAt: Date;
}

export type CreateProjectResult = Result<
  { project: Project; smtp: IssuedCredential; apiToken: IssuedToken },
  "invalid_upstream",
  Explained
>;

export type UpdateProjectResult = Result<
  Project,
  "not_found" | "invalid_upstream" | "invalid_local_address",
  Explained
>;

export type DeleteProjectResult = Result<undefined, "not_found" | "messages_pending", Explained>;

export type RevokeResult = Result<{ revokedAt: Date }, "not_found", Explained>;

function sealedUpstream(url: string, encryptionKey: Buffer) {
  const parsed = parseUpstreamUrl(url);
  return {
    upstreamUrl: parsed.publicUrl,
    upstreamSecret: parsed.password === undefined ? null : sealSecret(parsed.password, encryptionKey),
  };
}

function upstreamError(error: unknown) {
  if (error instanceof UpstreamUrlError) {
    return refuse("invalid_upstream", { message: `upstream: ${error.message}` });
  }
  throw error;
}

export function createProjectService(deps: ProjectServiceDeps) {
  const { db, redis, config } = deps;
  const invalidate = (event: AuthInvalidation) => {
    for (const cache of deps.localCaches ?? []) cache.invalidate(event);
    return publishAuthInvalidation(redis, config.redisKeyPrefix, event);
  };

  return {
    async create(input: ProjectInput, by: Actor): Promise<CreateProjectResult> {
      let upstream: ReturnType<typeof sealedUpstream>;
      try {
        upstream = sealedUpstream(input.upstream, config.encryptionKey);
      } catch (error) {
        return upstreamError(error);
      }
      // bcrypt runs before the transaction so that no connection is held while it hashes.
      const credential = await issueSmtpCredential();
      const token = issueApiToken();
      return db.$transaction(async (tx) => {
        const project = await tx.project.create({
          data: {
            name: input.name,
            quotaPerMinute: input.quota?.perMinute ?? projectDefaults.quotaPerMinute,
            quotaDaily: input.quota?.daily ?? projectDefaults.quotaDaily,
            maxRecipients: input.maxRecipients ?? projectDefaults.maxRecipients,
            senderDomains: input.senderDomains ?? [],
            ...upstream,
          },
        });
        const smtp = await tx.smtpCredential.create({
          data: { projectId: project.id, key: credential.key, secretHash: credential.secretHash },
        });
        const apiToken = await tx.apiToken.create({
          data: { projectId: project.id, tokenHash: token.tokenHash, prefix: token.prefix },
        });
        const audit = { actor: by.actor, ip: by.ip, projectId: project.id };
        await recordAudit(tx, {
          ...audit,
          action: "project.created",
          details: {
            name: project.name,
            upstream: project.upstreamUrl,
            quota: { perMinute: project.quotaPerMinute, daily: project.quotaDaily },
            maxRecipients: project.maxRecipients,
            senderDomains: project.senderDomains,
          },
        });
        await recordAudit(tx, {
          ...audit,
          action: "credential.created",
          details: { credentialId: smtp.id, username: smtp.key },
        });
        await recordAudit(tx, {
          ...audit,
          action: "token.created",
          details: { tokenId: apiToken.id, prefix: apiToken.prefix },
        });
        return ok({
          project,
          smtp: {
            id: smtp.id,
            username: credential.key,
            password: credential.secret,
            createdAt: smtp.createdAt,
          },
          apiToken: {
            id: apiToken.id,
            token: token.token,
            prefix: token.prefix,
            createdAt: apiToken.createdAt,
          },
        });
      });
    },

    async list(): Promise<Project[]> {
      const { rows } = await sqlPoolOf(db).query<ProjectRow>(listProjectsStatement);
      return rows.map((row) => ({
        ...row,
        createdAt: new Date(row.createdAt),
        updatedAt: new Date(row.updatedAt),
      }));
    },

    /** The project with its credentials and tokens (public parts only). */
    show(id: string) {
      return db.project.findUnique({
        where: { id },
        include: {
          credentials: {
            select: { id: true, key: true, createdAt: true, lastUsedAt: true, revokedAt: true },
            orderBy: { createdAt: "asc" },
          },
          tokens: {
            select: { id: true, prefix: true, createdAt: true, lastUsedAt: true, revokedAt: true },
            orderBy: { createdAt: "asc" },
          },
        },
      });
    },

    async update(id: string, patch: ProjectPatch, by: Actor): Promise<UpdateProjectResult> {
      let upstream: ReturnType<typeof sealedUpstream> | undefined;
      if (patch.upstream !== undefined) {
        try {
          upstream = sealedUpstream(patch.upstream, config.encryptionKey);
        } catch (error) {
          return upstreamError(error);
        }
      }
      const unusable = patch.localAddresses && (await unusableLocalAddress(patch.localAddresses));
      if (unusable)
        return refuse("invalid_local_address", {
          message: `localAddresses: ${unusable.address} is not an address of this host (${unusable.reason})`,
        });
      const result = await db.$transaction(async (tx) => {
        const before = await tx.project.findUnique({ where: { id } });
        if (!before) return undefined;
        const project = await tx.project.update({
          where: { id },
          data: {
            name: patch.name,
            status: patch.status,
            quotaPerMinute: patch.quota?.perMinute,
            quotaDaily: patch.quota?.daily,
            maxRecipients: patch.maxRecipients,
            senderDomains: patch.senderDomains,
            requireVerifiedDomain: patch.requireVerifiedDomain,
            mode: patch.mode,
            holdTtlMinutes: patch.holdTtlMinutes,
            holdExpiry: patch.holdExpiry,
            dedupWindowSeconds: patch.dedupWindowSeconds,
            autoSuppress: patch.autoSuppress,
            returnPath: patch.returnPath,
            localAddresses: patch.localAddresses,
            ...upstream,
          },
        });
        const audit = { actor: by.actor, ip: by.ip, projectId: id };
        if (before.status !== project.status) {
          await recordAudit(tx, {
            ...audit,
            action: project.status === "suspended" ? "project.suspended" : "project.resumed",
          });
        }
        const changed = changedSettings(before, project, upstream !== undefined);
        if (Object.keys(changed).length > 0) {
          await recordAudit(tx, { ...audit, action: "project.updated", details: changed });
        }
        return project;
      });
      if (!result) return refuse("not_found", { message: `no project ${id}` });
      await invalidate({ kind: "project", projectId: id });
      return ok(result);
    },

    /**
     * Refuses while messages wait for delivery (queued or deferred) or approval (held): deleting would silently drop
     * mail that was accepted with a 250. `force` is the operator saying they accept that loss.
     */
    async delete(id: string, options: { force: boolean }, by: Actor): Promise<DeleteProjectResult> {
      const outcome = await db.$transaction(async (tx) => {
        // Lock the row so that no concurrent update slips between the check and the delete.
        const locked = await tx.$queryRaw<{ id: string }[]>`
          SELECT id FROM "Project" WHERE id = ${id}::uuid FOR UPDATE`;
        if (locked.length === 0) return refuse("not_found");
        const pending = await countPendingMessages(tx, id);
        if (pending > 0 && !options.force) {
          return refuse("messages_pending", { pending });
        }
        await tx.project.delete({ where: { id } });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId: id,
          action: "project.deleted",
          details: { forced: options.force, pendingMessagesDropped: pending },
        });
        return ok(undefined);
      });
      if (!outcome.ok) {
        return outcome.reason === "not_found"
          ? refuse("not_found", { message: `no project ${id}` })
          : refuse("messages_pending", {
              message: `${outcome.pending} message(s) are still queued, deferred or held; delete with force to drop them`,
            });
      }
      await invalidate({ kind: "project", projectId: id });
      return ok(undefined);
    },

    async createCredential(projectId: string, by: Actor): Promise<IssuedCredential | undefined> {
      if (!(await db.project.findUnique({ where: { id: projectId }, select: { id: true } })))
        return undefined;
      const issued = await issueSmtpCredential();
      return db.$transaction(async (tx) => {
        const row = await tx.smtpCredential.create({
          data: { projectId, key: issued.key, secretHash: issued.secretHash },
        });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "credential.created",
          details: { credentialId: row.id, username: row.key },
        });
        return { id: row.id, username: issued.key, password: issued.secret, createdAt: row.createdAt };
      });
    },

    /** Revoking twice answers the first revocation's time and writes no second audit event. */
    async revokeCredential(projectId: string, credentialId: string, by: Actor): Promise<RevokeResult> {
      const result = await db.$transaction(async (tx) => {
        const row = await tx.smtpCredential.findFirst({ where: { id: credentialId, projectId } });
        if (!row) return undefined;
        if (row.revokedAt) return row.revokedAt;
        const revoked = await tx.smtpCredential.update({
          where: { id: credentialId },
          data: { revokedAt: new Date() },
        });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "credential.revoked",
          details: { credentialId, username: row.key },
        });
        return revoked.revokedAt as Date;
      });
      if (!result) return refuse("not_found", { message: `no credential ${credentialId} in this project` });
      await invalidate({ kind: "credential", credentialId });
      return ok({ revokedAt: result });
    },

    async createToken(projectId: string, by: Actor): Promise<IssuedToken | undefined> {
      if (!(await db.project.findUnique({ where: { id: projectId }, select: { id: true } })))
        return undefined;
      const issued = issueApiToken();
      return db.$transaction(async (tx) => {
        const row = await tx.apiToken.create({
          data: { projectId, tokenHash: issued.tokenHash, prefix: issued.prefix },
        });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "token.created",
          details: { tokenId: row.id, prefix: row.prefix },
        });
        return { id: row.id, token: issued.token, prefix: row.prefix, createdAt: row.createdAt };
      });
    },

    async revokeToken(projectId: string, tokenId: string, by: Actor): Promise<RevokeResult> {
      const result = await db.$transaction(async (tx) => {
        const row = await tx.apiToken.findFirst({ where: { id: tokenId, projectId } });
        if (!row) return undefined;
        if (row.revokedAt) return row.revokedAt;
        const revoked = await tx.apiToken.update({ where: { id: tokenId }, data: { revokedAt: new Date() } });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "token.revoked",
          details: { tokenId, prefix: row.prefix },
        });
        return revoked.revokedAt as Date;
      });
      if (!result) return refuse("not_found", { message: `no token ${tokenId} in this project` });
      await invalidate({ kind: "apiToken", tokenId });
      return ok({ revokedAt: result });
    },
  };
}

export type ProjectService = ReturnType<typeof createProjectService>;

/** What an update changed, for the audit trail: public values only (never the upstream password). */
function changedSettings(
  before: Project,
  after: Project,
  upstreamGiven: boolean,
): Record<string, string | number | boolean | string[]> {
  const changed: Record<string, string | number | boolean | string[]> = {};
  if (before.name !== after.name) changed.name = after.name;
  if (before.quotaPerMinute !== after.quotaPerMinute) changed.quotaPerMinute = after.quotaPerMinute;
  if (before.quotaDaily !== after.quotaDaily) changed.quotaDaily = after.quotaDaily;
  if (before.maxRecipients !== after.maxRecipients) changed.maxRecipients = after.maxRecipients;
  if (before.senderDomains.join(",") !== after.senderDomains.join(","))
    changed.senderDomains = after.senderDomains;
  if (before.localAddresses.join(",") !== after.localAddresses.join(","))
    changed.localAddresses = after.localAddresses;
  for (const key of [
    "mode",
    "holdTtlMinutes",
    "holdExpiry",
    "dedupWindowSeconds",
    "autoSuppress",
    "returnPath",
    "requireVerifiedDomain",
  ] as const) {
    if (before[key] !== after[key]) changed[key] = after[key];
  }
  // A new password behind the same public URL is still a change worth recording.
  if (upstreamGiven) changed.upstream = after.upstreamUrl;
  return changed;
}
