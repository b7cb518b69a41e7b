import { type MessageStatus, sqlPoolOf } from "@postern/db";
import {
  applyBulkAction,
  type BulkAction,
  bulkActionLimit,
  changeMessageStatus,
  findMessage,
  type ListedMessage,
  lifecycleActions,
  listMessages,
  retryMessage,
  streamMessageBody,
} from "@postern/messages";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate, table } from "./operator";
import { validProjectId } from "./project";

const statuses: MessageStatus[] = [
  "queued",
  "deferred",
  "delivered",
  "failed",
  "cancelled",
  "held",
  "denied",
  "sandboxed",
];

/** The options that select messages, as `GET /v1/messages` and the bulk actions' filter. */
interface FilterOptions {
  status?: MessageStatus;
  from?: string;
  to?: string;
  after?: Date;
  before?: Date;
}

interface ListOptions extends OutputOptions, FilterOptions {
  subject?: string;
  limit: number;
}

interface ActionOptions extends OutputOptions, FilterOptions {
  action: BulkAction;
  dryRun?: boolean;
}

function time(value: string): Date {
  const at = new Date(value);
  if (Number.isNaN(at.getTime())) throw new InvalidArgumentError("must be an ISO 8601 time");
  return at;
}

function limit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new InvalidArgumentError("must be a whole number from 1 to 1000");
  return n;
}

/** The fields of GET /v1/messages's items, for the same reader. */
function summary(message: ListedMessage) {
  return {
    id: message.id,
    status: message.status,
    from: message.mailFrom,
    to: message.recipients.map((r) => r.address),
    subject: message.subject,
    size: message.size,
    attemptCount: message.attempts,
    lastError: message.lastError,
    createdAt: message.createdAt.toISOString(),
    updatedAt: message.updatedAt.toISOString(),
  };
}

const notFound = (id: string) => new CommandFailure(exitCodes.notFound, "not_found", `no message ${id}`);

function ids(projectId: string, messageId: string) {
  return { projectId: validProjectId(projectId), id: validProjectId(messageId, "message id") };
}

/**
 * `postern messages list|show|raw|retry|cancel|actions`: the operator's view of a project's messages,
 * through the same functions of @postern/messages as the API (the same guards, events and audit
 * events; the actor is `cli`).
 */
export function registerMessageCommands(program: Command): void {
  const messages = program
    .command("messages")
    .description("list, read, retry and cancel a project's messages, one or many");
  messages
    .command("list")
    .description("a project's messages, newest first")
    .argument("<projectId>", "project id")
    .addOption(new Option("--status <status>", "only this status").choices(statuses))
    .option("--from <address>", "only this envelope sender")
    .option("--to <address>", "only messages with this envelope recipient")
    .option("--subject <text>", "only subjects containing this text (case-insensitive)")
    .option("--after <time>", "accepted at or after (ISO 8601)", time)
    .option("--before <time>", "accepted before (ISO 8601)", time)
    .option("-n, --limit <n>", "at most this many", limit, 50)
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: ListOptions) =>
      operate(options, async (runtime) => {
        const rows = await listMessages(runtime.db, {
          projectId: validProjectId(projectId),
          status: options.status,
          from: options.from,
          to: options.to,
          subject: options.subject,
          createdAfter: options.after,
          createdBefore: options.before,
          limit: options.limit,
        });
        const items = rows.slice(0, options.limit).map(summary);
        return {
          json: { items },
          text:
            items
              .map(
                (m) =>
                  `${m.createdAt}  ${m.id}  ${m.status.padEnd(9)}  ${m.from} → ${m.to.join(", ")}  ${m.subject ?? ""}`,
              )
              .join("\n") || "no messages",
        };
      }),
    );
  messages
    .command("show")
    .description("a message with its recipients' results and delivery attempts")
    .argument("<projectId>", "project id")
    .argument("<messageId>", "message id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, messageId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const key = ids(projectId, messageId);
        const message = await findMessage(runtime.db, key.projectId, key.id);
        if (!message) throw notFound(messageId);
        const json = {
          ...summary(message),
          sha256: message.sha256,
          recipients: message.recipients.map(({ address, status, code, enhancedCode, response }) => ({
            address,
            status,
            code,
            enhancedCode,
            response,
          })),
          attempts: message.deliveryAttempts.map((a) => ({
            number: a.number,
            startedAt: a.startedAt.toISOString(),
            outcome: a.outcome,
            upstreamHost: a.upstreamHost,
            code: a.code,
            response: a.response,
          })),
        };
        return {
          json,
          text: [
            table([
              ["id", json.id],
              ["status", json.status],
              ["from", json.from],
              ["subject", json.subject],
              ["size", json.size],
              ["created", json.createdAt],
              ["last error", json.lastError],
            ]),
            ...json.recipients.map(
              (r) => `to ${r.address}  ${r.status}  ${r.code ?? ""} ${r.response ?? ""}`,
            ),
            ...json.attempts.map(
              (a) =>
                `attempt ${a.number}  ${a.startedAt}  ${a.outcome}  ${a.code ?? "-"} ${a.response ?? ""}`,
            ),
          ].join("\n"),
        };
      }),
    );
  messages
    .command("raw")
    .description("the stored bytes of a message (as received, with Postern's Received header)")
    .argument("<projectId>", "project id")
    .argument("<messageId>", "message id")
    .option("--json", "print { id, size, raw } with the bytes in base64")
    .action((projectId: string, messageId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const key = ids(projectId, messageId);
        const body = await streamMessageBody(sqlPoolOf(runtime.db), key.projectId, key.id);
        if (body.state === "missing") throw notFound(messageId);
        if (body.state === "gone") {
          throw new CommandFailure(
            exitCodes.notFound,
            "gone",
            `message ${messageId}: its bytes are past retention`,
          );
        }
        const data = Buffer.concat(await body.stream.toArray());
        return { json: { id: key.id, size: data.length, raw: data.toString("base64") }, bytes: data };
      }),
    );
  messages
    .command("retry")
    .description("an attempt now for a deferred or failed message")
    .argument("<projectId>", "project id")
    .argument("<messageId>", "message id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, messageId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const key = ids(projectId, messageId);
        const outcome = await retryMessage(runtime.db, { ...key, actor: "cli", ip: null });
        refused(outcome, messageId, "only deferred or failed messages can be retried");
        await deliverNow(runtime, [key]);
        return {
          json: { id: key.id, status: "queued" },
          text: `message ${key.id} queued for an attempt now`,
        };
      }),
    );
  const statusActions = [
    {
      action: "cancel",
      description: "cancel a queued, deferred or held message: it is never delivered afterwards",
      allowed: "only queued, deferred or held messages can be cancelled",
      done: "cancelled",
    },
    {
      action: "approve",
      description: "approve a held message: it is queued and delivered now",
      allowed: "only held messages can be approved",
      done: "approved: queued for delivery now",
    },
    {
      action: "deny",
      description: "deny a held message: it is never delivered",
      allowed: "only held messages can be denied",
      done: "denied",
    },
  ] as const;
  for (const { action, description, allowed, done } of statusActions) {
    messages
      .command(action)
      .description(description)
      .argument("<projectId>", "project id")
      .argument("<messageId>", "message id")
      .option("--json", "print JSON for scripts")
      .action((projectId: string, messageId: string, options: OutputOptions) =>
        operate(options, async (runtime) => {
          const key = ids(projectId, messageId);
          const outcome = await changeMessageStatus(runtime.db, { ...key, action, actor: "cli", ip: null });
          refused(outcome, messageId, allowed);
          if (action === "approve") await deliverNow(runtime, [key]);
          const status = lifecycleActions[action].to;
          return { json: { id: key.id, status }, text: `message ${key.id} ${done}` };
        }),
      );
  }
  messages
    .command("actions")
    .description(
      `retry, cancel, approve or deny every message the filter matches (the newest ${bulkActionLimit}), as POST /v1/messages/actions`,
    )
    .argument("<projectId>", "project id")
    .addOption(
      new Option("--action <action>", "what to do")
        .choices(Object.keys(lifecycleActions))
        .makeOptionMandatory(),
    )
    .addOption(new Option("--status <status>", "only this status").choices(statuses))
    .option("--from <address>", "only this envelope sender")
    .option("--to <address>", "only messages with this envelope recipient")
    .option("--after <time>", "accepted at or after (ISO 8601)", time)
    .option("--before <time>", "accepted before (ISO 8601)", time)
    .option("--dry-run", "count what would change; change nothing")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: ActionOptions) =>
      operate(options, async (runtime) => {
        const id = validProjectId(projectId);
        const dryRun = options.dryRun === true;
        const result = await applyBulkAction(runtime.db, {
          projectId: id,
          action: options.action,
          filter: {
            status: options.status,
            from: options.from,
            to: options.to,
            createdAfter: options.after,
            createdBefore: options.before,
          },
          dryRun,
          actor: "cli",
          ip: null,
        });
        // Retried and approved messages get an attempt now, as the API's.
        if (lifecycleActions[options.action].to === "queued") {
          await deliverNow(
            runtime,
            result.changedIds.map((messageId) => ({ projectId: id, id: messageId })),
          );
        }
        const { matched, changed } = result;
        const more = matched === bulkActionLimit ? "; more may match: run it again" : "";
        return {
          json: { matched, changed, dryRun },
          text: `matched ${matched}, ${dryRun ? "would change" : "changed"} ${changed}${more}`,
        };
      }),
    );
}

function refused(
  outcome:
    | { ok: true }
    | { ok: false; reason: "not_found" }
    | { ok: false; reason: "invalid_transition"; from: MessageStatus },
  messageId: string,
  allowed: string,
): void {
  if (outcome.ok) return;
  if (outcome.reason === "not_found") throw notFound(messageId);
  throw new CommandFailure(
    exitCodes.conflict,
    "invalid_transition",
    `message is ${outcome.from}; ${allowed}`,
  );
}

/** As the API's retry and approve: the messages' jobs run now (the sweeper enqueues them otherwise). */
async function deliverNow(runtime: Runtime, messages: { projectId: string; id: string }[]): Promise<void> {
  // Imported here: BullMQ is for the verbs that enqueue, not for listing and showing.
  const { createDeliveryProducer } = await import("@postern/queue");
  const producer = createDeliveryProducer(runtime.redis, runtime.config.redisKeyPrefix);
  try {
    await producer.deliverManyNow(messages);
  } finally {
    await producer.close();
  }
}
