// The endpoints' service alone: the package index also brings the webhook worker (BullMQ, metrics).
import {
  createWebhookService,
  subscribableEventTypes,
  type WebhookDeliveryView,
  type WebhookRefusal,
  type WebhookView,
  webhookInputSchema,
} from "@postern/webhooks/endpoints";
import type { WebhookWaker } from "@postern/webhooks/queue";
import { type Command, InvalidArgumentError } from "commander";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate, table } from "./operator";
import { cliActor, validProjectId } from "./project";

/**
 * The webhook service, with a waker for tests and replays; call `close` when done. The waker (a
 * BullMQ queue) is made by the first wake-up: listing and showing need neither BullMQ nor Redis.
 */
function webhooksOf(runtime: Runtime) {
  let waker: Promise<WebhookWaker> | undefined;
  const wakerOf = () => {
    waker ??= import("@postern/webhooks/queue").then(({ createWebhookWaker }) =>
      createWebhookWaker(runtime.redis, runtime.config.redisKeyPrefix),
    );
    return waker;
  };
  const service = createWebhookService({
    db: runtime.db,
    config: runtime.config,
    wake: async (endpointId) => (await wakerOf()).wake([endpointId]),
  });
  return { service, close: async () => (await waker)?.close() };
}

async function withWebhooks<T>(
  runtime: Runtime,
  use: (service: ReturnType<typeof webhooksOf>["service"]) => Promise<T>,
) {
  const { service, close } = webhooksOf(runtime);
  try {
    return await use(service);
  } finally {
    await close();
  }
}

const exitCodeOf: Record<WebhookRefusal, (typeof exitCodes)[keyof typeof exitCodes]> = {
  not_found: exitCodes.notFound,
  invalid_webhook_url: exitCodes.usage,
  webhook_disabled: exitCodes.conflict,
};

function refused(outcome: { reason: WebhookRefusal; message: string }): never {
  throw new CommandFailure(exitCodeOf[outcome.reason], outcome.reason, outcome.message);
}

function eventTypes(value: string): string[] {
  const list = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const all = list.includes("all") ? [...subscribableEventTypes] : list;
  const unknown = all.filter((t) => !(subscribableEventTypes as readonly string[]).includes(t));
  if (all.length === 0 || unknown.length > 0)
    throw new InvalidArgumentError(
      `unknown event type ${unknown.join(", ") || "(none)"}; known: ${subscribableEventTypes.join(", ")}, or all`,
    );
  return all;
}

function line(w: WebhookView): string {
  const state =
    w.status === "active"
      ? w.failingSince
        ? `failing since ${w.failingSince}`
        : "active"
      : `disabled (${w.disabledReason})`;
  return `${w.id}  ${w.url}  ${state}  ${w.events.join(",")}`;
}

function deliveryLine(d: WebhookDeliveryView): string {
  const last = d.attempts.at(-1);
  const answer = last
    ? last.statusCode !== null
      ? `HTTP ${last.statusCode}`
      : (last.error ?? "")
    : "not tried yet";
  return `${d.id}  ${d.createdAt}  ${d.eventType}  ${d.status}  ${d.attempts.length} attempt${d.attempts.length === 1 ? "" : "s"}  ${answer}`;
}

/** `postern webhooks list|add|remove|test|deliveries|replay` (docs/webhooks.md). */
export function registerWebhookCommands(program: Command): void {
  const webhooks = program
    .command("webhooks")
    .description("a project's webhook endpoints and their deliveries");
  webhooks
    .command("list")
    .description("list a project's webhook endpoints")
    .argument("<projectId>", "project id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions) =>
      operate(options, (runtime) =>
        withWebhooks(runtime, async (service) => {
          const items = await service.list(validProjectId(projectId));
          return { json: { items }, text: items.length === 0 ? "no webhooks" : items.map(line).join("\n") };
        }),
      ),
    );
  webhooks
    .command("add")
    .description("add an endpoint; prints its signing secret once")
    .argument("<projectId>", "project id")
    .argument("<url>", "https:// URL the events are POSTed to")
    .requiredOption("--events <types>", "comma-separated event types, or all", eventTypes)
    .option("--description <text>", "what the endpoint is")
    .option("--json", "print JSON for scripts")
    .action(
      (projectId: string, url: string, options: OutputOptions & { events: string[]; description?: string }) =>
        operate(options, (runtime) =>
          withWebhooks(runtime, async (service) => {
            const input = webhookInputSchema.safeParse({
              url,
              events: options.events,
              description: options.description,
            });
            if (!input.success) {
              const issue = input.error.issues[0];
              throw new CommandFailure(
                exitCodes.usage,
                "validation_error",
                `${issue?.path.join(".")}: ${issue?.message}`,
              );
            }
            const outcome = await service.create(validProjectId(projectId), input.data, cliActor);
            if (!outcome.ok) refused(outcome);
            const created = outcome.value;
            return {
              json: created,
              text: `${table([
                ["id", created.id],
                ["url", created.url],
                ["events", created.events.join(", ")],
                ["secret", created.secret],
              ])}\nThe secret is shown only now: receivers verify signatures with it.`,
            };
          }),
        ),
    );
  webhooks
    .command("remove")
    .description("delete an endpoint and its deliveries")
    .argument("<projectId>", "project id")
    .argument("<webhookId>", "webhook id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, webhookId: string, options: OutputOptions) =>
      operate(options, (runtime) =>
        withWebhooks(runtime, async (service) => {
          const removed = await service.remove(
            validProjectId(projectId),
            validProjectId(webhookId, "webhook id"),
            cliActor,
          );
          if (!removed) throw new CommandFailure(exitCodes.notFound, "not_found", `no webhook ${webhookId}`);
          return { json: { id: webhookId, removed: true }, text: `removed webhook ${webhookId}` };
        }),
      ),
    );
  webhooks
    .command("test")
    .description("send a webhook.test event to an endpoint (the workers send it)")
    .argument("<projectId>", "project id")
    .argument("<webhookId>", "webhook id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, webhookId: string, options: OutputOptions) =>
      operate(options, (runtime) =>
        withWebhooks(runtime, async (service) => {
          const outcome = await service.sendTest(
            validProjectId(projectId),
            validProjectId(webhookId, "webhook id"),
          );
          if (!outcome.ok) refused(outcome);
          return { json: outcome.value, text: `test event queued as delivery ${outcome.value.id}` };
        }),
      ),
    );
  webhooks
    .command("deliveries")
    .description("an endpoint's deliveries, newest first")
    .argument("<projectId>", "project id")
    .argument("<webhookId>", "webhook id")
    .option("--status <status>", "pending, succeeded or failed")
    .option("--limit <n>", "how many (at most 200)", "50")
    .option("--json", "print JSON for scripts")
    .action(
      (projectId: string, webhookId: string, options: OutputOptions & { status?: string; limit: string }) =>
        operate(options, (runtime) =>
          withWebhooks(runtime, async (service) => {
            const status = options.status as "pending" | "succeeded" | "failed" | undefined;
            if (status !== undefined && !["pending", "succeeded", "failed"].includes(status))
              throw new CommandFailure(
                exitCodes.usage,
                "validation_error",
                "--status: pending, succeeded or failed",
              );
            const limit = Number(options.limit);
            if (!Number.isInteger(limit) || limit < 1 || limit > 200)
              throw new CommandFailure(
                exitCodes.usage,
                "validation_error",
                "--limit: a whole number from 1 to 200",
              );
            const page = await service.deliveries(
              validProjectId(projectId),
              validProjectId(webhookId, "webhook id"),
              {
                status,
                limit,
              },
            );
            if (!page) throw new CommandFailure(exitCodes.notFound, "not_found", `no webhook ${webhookId}`);
            return {
              json: page,
              text: page.items.length === 0 ? "no deliveries" : page.items.map(deliveryLine).join("\n"),
            };
          }),
        ),
    );
  webhooks
    .command("replay")
    .description("send a delivery again, or with --since every failed delivery since a time")
    .argument("<projectId>", "project id")
    .argument("<webhookId>", "webhook id")
    .argument("[deliveryId]", "the delivery to send again")
    .option("--since <date>", "ISO 8601 date-time: every failed delivery created since then")
    .option("--json", "print JSON for scripts")
    .action(
      (
        projectId: string,
        webhookId: string,
        deliveryId: string | undefined,
        options: OutputOptions & { since?: string },
      ) =>
        operate(options, (runtime) =>
          withWebhooks(runtime, async (service) => {
            const project = validProjectId(projectId);
            const webhook = validProjectId(webhookId, "webhook id");
            if ((deliveryId === undefined) === (options.since === undefined))
              throw new CommandFailure(
                exitCodes.usage,
                "validation_error",
                "give a delivery id or --since, not both",
              );
            if (deliveryId !== undefined) {
              const outcome = await service.replay(
                project,
                webhook,
                validProjectId(deliveryId, "delivery id"),
                cliActor,
              );
              if (!outcome.ok) refused(outcome);
              return { json: outcome.value, text: `delivery ${deliveryId} queued again` };
            }
            const since = new Date(options.since as string);
            if (Number.isNaN(since.getTime()))
              throw new CommandFailure(
                exitCodes.usage,
                "validation_error",
                "--since: must be an ISO 8601 date-time",
              );
            const outcome = await service.replayFailedSince(project, webhook, since, cliActor);
            if (!outcome.ok) refused(outcome);
            return { json: outcome.value, text: `${outcome.value.replayed} failed deliveries queued again` };
          }),
        ),
    );
}
