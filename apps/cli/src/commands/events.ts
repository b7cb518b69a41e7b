import { setTimeout as sleep } from "node:timers/promises";
import {
  decodeEventCursor,
  type EventCursor,
  encodeEventCursor,
  listEvents,
  listMessageEvents,
  type MessageEventRow,
  messageEventJson,
  messageEventTypes,
} from "@postern/messages";
import { type Command, InvalidArgumentError, Option } from "commander";
import { exitWithStartupError, openRuntime, type Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { validProjectId } from "./project";

interface EventsOptions {
  message?: string;
  type?: string;
  after?: EventCursor;
  limit: number;
  follow?: boolean;
  json?: boolean;
}

/** How often --follow looks for new events, and how many it reads at a time. */
const followIntervalMs = 250;
const followPageSize = 200;

function cursor(value: string): EventCursor {
  const at = decodeEventCursor(value);
  if (!at) throw new InvalidArgumentError("must be the cursor of an event this command printed");
  return at;
}

function limit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new InvalidArgumentError("must be a whole number from 1 to 1000");
  return n;
}

/** The API's event fields and the event's cursor, to resume with --after from any line. */
function eventJson(event: MessageEventRow) {
  return { cursor: encodeEventCursor(event), ...messageEventJson(event) };
}

function line(event: ReturnType<typeof eventJson>): string {
  const data = Object.keys(event.data).length > 0 ? `  ${JSON.stringify(event.data)}` : "";
  return `${event.createdAt}  ${event.cursor}  ${event.type.padEnd(17)}  message=${event.messageId}${data}`;
}

/**
 * `postern events <projectId>`: a project's message events as GET /v1/events reads them (oldest
 * first, after a cursor), or one message's (--message), one per line; --follow keeps printing new
 * ones until interrupted. Every line carries its event's cursor, so a reader resumes with --after.
 */
export function registerEventCommands(program: Command): void {
  program
    .command("events")
    .description("print a project's message events, oldest first; --follow keeps printing new ones")
    .argument("<projectId>", "project id")
    .addOption(
      new Option("--message <id>", "only this message's events (all of them)").conflicts(["after", "follow"]),
    )
    .addOption(new Option("--type <type>", "only this event type").choices(messageEventTypes))
    .option("--after <cursor>", "only events after this cursor (from a line printed before)", cursor)
    .option("-n, --limit <n>", "print at most this many (not with --follow or --message)", limit, 100)
    .option("-f, --follow", "keep printing new events until interrupted")
    .option("--json", "one JSON object per line, for scripts")
    .action(async (projectIdArgument: string, options: EventsOptions) => {
      let projectId: string;
      let messageId: string | undefined;
      try {
        projectId = validProjectId(projectIdArgument);
        if (options.message !== undefined) messageId = validProjectId(options.message, "--message");
      } catch (error) {
        process.stderr.write(`postern: ${(error as Error).message}\n`);
        process.exit(exitCodes.usage);
      }
      let runtime: Runtime;
      try {
        runtime = await openRuntime({ attach: true, logFd: 2 });
      } catch (error) {
        exitWithStartupError(error);
      }
      const print = (event: MessageEventRow) => {
        const json = eventJson(event);
        process.stdout.write(`${options.json ? JSON.stringify(json) : line(json)}\n`);
      };
      const controller = new AbortController();
      process.on("SIGINT", () => controller.abort());
      process.on("SIGTERM", () => controller.abort());
      let exitCode: number = exitCodes.ok;
      try {
        if (messageId !== undefined) {
          const events = await listMessageEvents(runtime.db, projectId, messageId);
          if (!events) {
            const message = `no message ${messageId}`;
            if (options.json)
              process.stdout.write(`${JSON.stringify({ error: { code: "not_found", message } })}\n`);
            process.stderr.write(`postern: ${message}\n`);
            exitCode = exitCodes.notFound;
          } else {
            for (const event of events) if (!options.type || event.type === options.type) print(event);
          }
        } else if (!options.follow) {
          const events = await listEvents(runtime.db, {
            projectId,
            after: options.after,
            type: options.type,
            limit: options.limit,
          });
          for (const event of events) print(event);
        } else {
          // listEvents shows an event only once every older transaction has ended, so a cursor
          // never passes an event that commits later (packages/messages/src/events.ts).
          let after = options.after;
          while (!controller.signal.aborted) {
            const events = await listEvents(runtime.db, {
              projectId,
              after,
              type: options.type,
              limit: followPageSize,
            });
            for (const event of events) print(event);
            after = events.at(-1) ?? after;
            if (events.length < followPageSize) {
              await sleep(followIntervalMs, undefined, { signal: controller.signal }).catch(() => {});
            }
          }
        }
      } catch (error) {
        if (!controller.signal.aborted) {
          process.stderr.write(`postern: ${(error as Error).message}\n`);
          exitCode = exitCodes.unavailable;
        }
      } finally {
        await runtime.close();
      }
      process.exit(exitCode);
    });
}
