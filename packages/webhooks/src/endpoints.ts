import { randomBytes } from "node:crypto";
import { recordAudit } from "@postern/audit";
import { sealSecret } from "@postern/auth/secretbox";
import { type Database, type Prisma, uuidv7 } from "@postern/db";
import { messageEventTypes } from "@postern/messages";
import { ok, type Result, refuse } from "@postern/result";
import { z } from "zod";
import { allowedAddresses, hostOf, RefusedAddressError } from "./address-policy";
import { testEvent, type WebhookEvent } from "./events";

/**
 * A project's webhook endpoints and their deliveries, as the API and the CLI manage them
 * (docs/webhooks.md). The signing secret is made here, shown once in the answer to the creation
 * and stored sealed with ENCRYPTION_KEY. Every change is audited in its transaction. A project
 * with endpoints has a cursor in the events outbox (`WebhookCursor`), created with its first
 * endpoint at the outbox's head (events from then on) and dropped with its last.
 */

/** The event types an endpoint may subscribe to: every type of the outbox. */
export const subscribableEventTypes = messageEventTypes;

export const webhookUrl = z
  .string()
  .trim()
  .max(2048)
  .refine(
    (value) => {
      try {
        const url = new URL(value);
        return (url.protocol === "https:" || url.protocol === "http:") && url.hostname !== "";
      } catch {
        return false;
      }
    },
    { error: "must be an http:// or https:// URL" },
  )
  .refine((value) => URL.canParse(value) && !new URL(value).username && !new URL(value).password, {
    error: "must not contain credentials (user:password@): requests are signed with the endpoint's secret",
  });

const eventList = z
  .array(z.enum(subscribableEventTypes))
  .min(1, "must name at least one event type")
  .max(subscribableEventTypes.length)
  .transform((list) => [...new Set(list)]);

export const webhookInputSchema = z.object({
  url: webhookUrl,
  events: eventList.describe("the event types POSTed to the endpoint"),
  description: z.string().trim().max(500).nullish(),
});
export type WebhookInput = z.input<typeof webhookInputSchema>;

export const webhookPatchSchema = z
  .object({
    url: webhookUrl.optional(),
    events: eventList.optional(),
    description: z.string().trim().max(500).nullish(),
    enabled: z
      .boolean()
      .optional()
      .describe("false disables the endpoint (nothing is sent to it); true enables it again"),
  })
  .refine((patch) => Object.values(patch).some((v) => v !== undefined), {
    error: "must change at least one field",
  });
export type WebhookPatch = z.input<typeof webhookPatchSchema>;

export interface WebhookView {
  id: string;
  url: string;
  description: string | null;
  events: string[];
  status: "active" | "disabled";
  /** `manual` or `failing`; null while active. */
  disabledReason: string | null;
  disabledAt: string | null;
  /** Since when every attempt has failed; null: the last one succeeded, or none was made. */
  failingSince: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface WebhookAttemptView {
  number: number;
  startedAt: string;
  durationMs: number;
  statusCode: number | null;
  response: string | null;
  error: string | null;
}

export interface WebhookDeliveryView {
  id: string;
  eventId: string | null;
  eventType: string;
  status: "pending" | "succeeded" | "failed";
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: string;
  completedAt: string | null;
  /** The body POSTed: the event. */
  payload: WebhookEvent;
  /** Every attempt, oldest first. */
  attempts: WebhookAttemptView[];
}

export interface Actor {
  actor: string;
  ip?: string | null;
}

export type WebhookRefusal = "not_found" | "invalid_webhook_url" | "webhook_disabled";

export interface WebhookServiceDeps {
  db: Database;
  config: { encryptionKey: Buffer; webhooks: { allowPrivate: boolean } };
  /** Queues a job for the endpoint (a test event, a replay); without it they wait for the sweeper. */
  wake?: (endpointId: string) => Promise<void>;
}

type EndpointRow = Prisma.WebhookEndpointGetPayload<object>;

function view(row: EndpointRow): WebhookView {
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    events: row.events,
    status: row.status,
    disabledReason: row.disabledReason,
    disabledAt: row.disabledAt?.toISOString() ?? null,
    failingSince: row.failingSince?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

const deliveryInclude = { log: { orderBy: { number: "asc" } } } as const;
type DeliveryRow = Prisma.WebhookDeliveryGetPayload<{ include: typeof deliveryInclude }>;

function deliveryView(row: DeliveryRow): WebhookDeliveryView {
  return {
    id: row.id,
    eventId: row.eventId?.toString() ?? null,
    eventType: row.eventType,
    status: row.status,
    nextAttemptAt: row.status === "pending" ? (row.nextAttemptAt?.toISOString() ?? null) : null,
    lastStatusCode: row.lastStatusCode,
    lastError: row.lastError,
    createdAt: row.createdAt.toISOString(),
    completedAt: row.completedAt?.toISOString() ?? null,
    payload: row.payload as unknown as WebhookEvent,
    attempts: row.log.map((a) => ({
      number: a.number,
      startedAt: a.startedAt.toISOString(),
      durationMs: a.durationMs,
      statusCode: a.statusCode,
      response: a.response,
      error: a.error,
    })),
  };
}

/** `whsec_` and 32 random bytes in base64, as Standard Webhooks' libraries take a secret. */
function newSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

type Tx = Prisma.TransactionClient;

/** Serialises the changes of a project's endpoints, so that its cursor exists exactly while they do. */
async function lockProject(tx: Tx, projectId: string): Promise<boolean> {
  const rows = await tx.$queryRaw<{ id: string }[]>`
SELECT "id" FROM "Project" WHERE "id" = ${projectId}::uuid FOR UPDATE`;
  return rows.length > 0;
}

export function createWebhookService(deps: WebhookServiceDeps) {
  const { db } = deps;
  const policy = { allowPrivate: deps.config.webhooks.allowPrivate };

  /** The URL's host resolves, and only to addresses webhooks may reach; else why not. */
  const checkUrl = async (url: string): Promise<string | undefined> => {
    const host = hostOf(new URL(url));
    try {
      await allowedAddresses(host, policy);
      return undefined;
    } catch (error) {
      if (error instanceof RefusedAddressError) return `url: ${error.message}`;
      const e = error as NodeJS.ErrnoException;
      return `url: ${host} does not resolve (${e.code ?? e.message})`;
    }
  };

  const findEndpoint = (projectId: string, id: string) =>
    db.webhookEndpoint.findFirst({ where: { id, projectId } });

  const wake = async (endpointId: string) => {
    // Committed already: without Redis the sweeper wakes the endpoint within DELIVERY_SWEEP_INTERVAL.
    await deps.wake?.(endpointId).catch(() => {});
  };

  return {
    async list(projectId: string): Promise<WebhookView[]> {
      const rows = await db.webhookEndpoint.findMany({ where: { projectId }, orderBy: { createdAt: "asc" } });
      return rows.map(view);
    },

    async get(projectId: string, id: string): Promise<WebhookView | undefined> {
      const row = await findEndpoint(projectId, id);
      return row ? view(row) : undefined;
    },

    async create(
      projectId: string,
      input: z.output<typeof webhookInputSchema>,
      by: Actor,
    ): Promise<Result<WebhookView & { secret: string }, WebhookRefusal, { message: string }>> {
      const problem = await checkUrl(input.url);
      if (problem) return refuse("invalid_webhook_url", { message: problem });
      const secret = newSecret();
      const row = await db.$transaction(async (tx) => {
        if (!(await lockProject(tx, projectId))) return undefined;
        const created = await tx.webhookEndpoint.create({
          data: {
            projectId,
            url: input.url,
            description: input.description ?? null,
            events: input.events,
            secretSealed: sealSecret(secret, deps.config.encryptionKey),
          },
        });
        // Events from the transactions still running on: none written before this endpoint existed.
        await tx.$executeRaw`
INSERT INTO "WebhookCursor" ("projectId", "txId", "eventId", "updatedAt")
VALUES (${projectId}::uuid, pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1,
        9223372036854775807, (now() AT TIME ZONE 'UTC'))
ON CONFLICT ("projectId") DO NOTHING`;
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "webhook.created",
          details: { webhookId: created.id, url: created.url, events: created.events },
        });
        return created;
      });
      if (!row) return refuse("not_found", { message: `no project ${projectId}` });
      return ok({ ...view(row), secret });
    },

    async update(
      projectId: string,
      id: string,
      patch: z.output<typeof webhookPatchSchema>,
      by: Actor,
    ): Promise<Result<WebhookView, WebhookRefusal, { message: string }>> {
      if (patch.url !== undefined) {
        const problem = await checkUrl(patch.url);
        if (problem) return refuse("invalid_webhook_url", { message: problem });
      }
      const row = await db.$transaction(async (tx) => {
        const before = await tx.webhookEndpoint.findFirst({ where: { id, projectId } });
        if (!before) return undefined;
        const enable = patch.enabled === true && before.status === "disabled";
        const disable = patch.enabled === false && before.status === "active";
        const after = await tx.webhookEndpoint.update({
          where: { id },
          data: {
            ...(patch.url !== undefined ? { url: patch.url } : {}),
            ...(patch.events !== undefined ? { events: patch.events } : {}),
            ...(patch.description !== undefined ? { description: patch.description } : {}),
            ...(enable
              ? { status: "active" as const, disabledAt: null, disabledReason: null, failingSince: null }
              : {}),
            ...(disable
              ? { status: "disabled" as const, disabledAt: new Date(), disabledReason: "manual" }
              : {}),
          },
        });
        const changed = Object.fromEntries(
          (["url", "events", "description"] as const)
            .filter((field) => patch[field] !== undefined)
            .map((field) => [field, after[field]]),
        );
        if (Object.keys(changed).length > 0)
          await recordAudit(tx, {
            actor: by.actor,
            ip: by.ip,
            projectId,
            action: "webhook.updated",
            details: { webhookId: id, ...changed },
          });
        if (enable || disable)
          await recordAudit(tx, {
            actor: by.actor,
            ip: by.ip,
            projectId,
            action: enable ? "webhook.enabled" : "webhook.disabled",
            details: { webhookId: id, ...(disable ? { reason: "manual" } : {}) },
          });
        return after;
      });
      if (!row) return refuse("not_found", { message: `no webhook ${id}` });
      // Enabled again: its deliveries that waited go now.
      if (row.status === "active" && patch.enabled === true) await wake(id);
      return ok(view(row));
    },

    /** False when the project has no such endpoint. Its deliveries go with it. */
    async remove(projectId: string, id: string, by: Actor): Promise<boolean> {
      return db.$transaction(async (tx) => {
        if (!(await lockProject(tx, projectId))) return false;
        const { count } = await tx.webhookEndpoint.deleteMany({ where: { id, projectId } });
        if (count === 0) return false;
        if ((await tx.webhookEndpoint.count({ where: { projectId } })) === 0)
          await tx.webhookCursor.deleteMany({ where: { projectId } });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "webhook.deleted",
          details: { webhookId: id },
        });
        return true;
      });
    },

    /**
     * Sends a `webhook.test` event to the endpoint, whatever types it subscribes to: a delivery
     * like any other (signed, retried, logged).
     */
    async sendTest(
      projectId: string,
      id: string,
    ): Promise<Result<WebhookDeliveryView, WebhookRefusal, { message: string }>> {
      const endpoint = await findEndpoint(projectId, id);
      if (!endpoint) return refuse("not_found", { message: `no webhook ${id}` });
      if (endpoint.status !== "active")
        return refuse("webhook_disabled", { message: `webhook ${id} is disabled; enable it first` });
      const deliveryId = uuidv7();
      const now = new Date();
      const event = testEvent(`test_${deliveryId}`, projectId, now);
      const row = await db.webhookDelivery.create({
        data: {
          id: deliveryId,
          endpointId: id,
          eventType: event.type,
          payload: event as unknown as Prisma.InputJsonObject,
          nextAttemptAt: now,
        },
        include: deliveryInclude,
      });
      await wake(id);
      return ok(deliveryView(row));
    },

    /** The endpoint's deliveries, newest first, with their attempts; undefined: no such endpoint. */
    async deliveries(
      projectId: string,
      id: string,
      query: { status?: "pending" | "succeeded" | "failed"; after?: string; limit: number },
    ): Promise<{ items: WebhookDeliveryView[]; nextCursor: string | null } | undefined> {
      if (!(await findEndpoint(projectId, id))) return undefined;
      const rows = await db.webhookDelivery.findMany({
        where: {
          endpointId: id,
          ...(query.status ? { status: query.status } : {}),
          ...(query.after ? { id: { lt: query.after } } : {}),
        },
        orderBy: { id: "desc" },
        take: query.limit + 1,
        include: deliveryInclude,
      });
      const page = rows.slice(0, query.limit);
      return {
        items: page.map(deliveryView),
        nextCursor: rows.length > query.limit ? (page.at(-1)?.id ?? null) : null,
      };
    },

    /**
     * Sends a delivery again now, from the first step of the retry schedule, whatever it came to
     * (its attempts so far stay in its log; the body and `webhook-id` are the same).
     */
    async replay(
      projectId: string,
      id: string,
      deliveryId: string,
      by: Actor,
    ): Promise<Result<WebhookDeliveryView, WebhookRefusal, { message: string }>> {
      const outcome = await db.$transaction(async (tx) => {
        const endpoint = await tx.webhookEndpoint.findFirst({ where: { id, projectId } });
        if (!endpoint) return refuse("not_found", { message: `no webhook ${id}` });
        if (endpoint.status !== "active")
          return refuse("webhook_disabled", { message: `webhook ${id} is disabled; enable it first` });
        const { count } = await tx.webhookDelivery.updateMany({
          where: { id: deliveryId, endpointId: id },
          data: replayed(),
        });
        if (count === 0)
          return refuse("not_found", { message: `no delivery ${deliveryId} of webhook ${id}` });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "webhook.replayed",
          details: { webhookId: id, deliveryIds: [deliveryId] },
        });
        return ok(
          await tx.webhookDelivery.findUniqueOrThrow({ where: { id: deliveryId }, include: deliveryInclude }),
        );
      });
      if (!outcome.ok) return outcome;
      await wake(id);
      return ok(deliveryView(outcome.value));
    },

    /** `replay` for every delivery of the endpoint that failed, created since `since`. */
    async replayFailedSince(
      projectId: string,
      id: string,
      since: Date,
      by: Actor,
    ): Promise<Result<{ replayed: number }, WebhookRefusal, { message: string }>> {
      const outcome = await db.$transaction(async (tx) => {
        const endpoint = await tx.webhookEndpoint.findFirst({ where: { id, projectId } });
        if (!endpoint) return refuse("not_found", { message: `no webhook ${id}` });
        if (endpoint.status !== "active")
          return refuse("webhook_disabled", { message: `webhook ${id} is disabled; enable it first` });
        const { count } = await tx.webhookDelivery.updateMany({
          where: { endpointId: id, status: "failed", createdAt: { gte: since } },
          data: replayed(),
        });
        await recordAudit(tx, {
          actor: by.actor,
          ip: by.ip,
          projectId,
          action: "webhook.replayed",
          details: { webhookId: id, failedSince: since.toISOString(), count },
        });
        return ok({ replayed: count });
      });
      if (outcome.ok && outcome.value.replayed > 0) await wake(id);
      return outcome;
    },
  };
}
export type WebhookService = ReturnType<typeof createWebhookService>;

function replayed() {
  return {
    status: "pending" as const,
    retryStep: 0,
    nextAttemptAt: new Date(),
    completedAt: null,
  };
}
