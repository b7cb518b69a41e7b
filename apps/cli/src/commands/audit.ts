import {
  type AuditEventJson,
  auditActions,
  auditEventJson,
  listAuditEvents,
  tailAudit,
} from "@postern/audit";
import type { AuditEvent } from "@postern/db";
import { type Command, InvalidArgumentError, Option } from "commander";
import { exitWithStartupError, openRuntime, type Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { validProjectId } from "./project";

interface TailOptions {
  project?: string;
  action?: string;
  limit: number;
  follow?: boolean;
  json?: boolean;
}

function line(event: AuditEventJson): string {
  const details = Object.keys(event.details).length > 0 ? `  ${JSON.stringify(event.details)}` : "";
  return `${event.createdAt}  #${event.id}  ${event.action.padEnd(18)}  project=${event.projectId ?? "-"}  actor=${event.actor}  ip=${event.ip ?? "-"}${details}`;
}

function limit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 1000)
    throw new InvalidArgumentError("must be a whole number from 0 to 1000");
  return n;
}

/**
 * `postern audit tail`: the latest events, oldest first, then (with --follow) new ones as they are
 * written by any process, until interrupted. --json prints one JSON object per line.
 */
export function registerAuditCommands(program: Command): void {
  program
    .command("audit")
    .description("read the audit log")
    .command("tail")
    .description("print the latest audit events; --follow keeps printing new ones until interrupted")
    .option("--project <id>", "only this project's events")
    .addOption(new Option("--action <action>", "only this action").choices(auditActions))
    .option("-n, --limit <n>", "how many past events to print first", limit, 20)
    .option("-f, --follow", "keep printing new events")
    .option("--json", "one JSON object per line, for scripts")
    .action(async (options: TailOptions) => {
      if (options.project !== undefined) {
        try {
          validProjectId(options.project, "--project");
        } catch (error) {
          process.stderr.write(`postern: ${(error as Error).message}\n`);
          process.exit(exitCodes.usage);
        }
      }
      let runtime: Runtime;
      try {
        runtime = await openRuntime({ attach: true, logFd: 2 });
      } catch (error) {
        exitWithStartupError(error);
      }
      const print = (event: AuditEvent) => {
        const json = auditEventJson(event);
        process.stdout.write(`${options.json ? JSON.stringify(json) : line(json)}\n`);
      };
      const filter = { projectId: options.project, action: options.action };
      const controller = new AbortController();
      process.on("SIGINT", () => controller.abort());
      process.on("SIGTERM", () => controller.abort());
      let exitCode: number = exitCodes.ok;
      try {
        const newest = await runtime.db.auditEvent.findFirst({
          orderBy: { id: "desc" },
          select: { id: true },
        });
        const past = await listAuditEvents(runtime.db, { ...filter, limit: options.limit });
        for (const event of [...past.items].reverse()) print(event);
        if (options.follow) {
          // From the newest id of the whole log (not only of the filtered page) so that nothing is printed twice.
          for await (const event of tailAudit(runtime.db, {
            filter,
            afterId: newest?.id ?? 0n,
            signal: controller.signal,
          })) {
            print(event);
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
