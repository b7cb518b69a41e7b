import { readFile } from "node:fs/promises";
import {
  createSuppressionService,
  type SuppressionEntry,
  type SuppressionView,
  suppressionAddress,
  suppressionInputSchema,
  suppressionReasons,
} from "@postern/projects";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate } from "./operator";
import { cliActor, validProjectId } from "./project";

function suppressionsOf(runtime: Runtime) {
  return createSuppressionService({ db: runtime.db, redis: runtime.redis, config: runtime.config });
}

function validAddress(value: string): string {
  const parsed = suppressionAddress.safeParse(value);
  if (!parsed.success) throw new InvalidArgumentError(parsed.error.issues[0]?.message ?? "invalid address");
  return parsed.data;
}

function line(s: SuppressionView): string {
  const expiry = s.expiresAt ? `  until ${s.expiresAt}` : "";
  const source = s.sourceMessageId ? `  from message ${s.sourceMessageId}` : "";
  return `${s.address}  ${s.reason}${expiry}${source}`;
}

function projectNotFound(projectId: string): never {
  throw new CommandFailure(exitCodes.notFound, "not_found", `no project ${projectId}`);
}

/** Entries of one write: an import is written in transactions of this many. */
const importChunk = 500;

export interface ImportReport {
  added: number;
  updated: number;
  refused: { line: number; problem: string }[];
}

/**
 * `address,reason[,expiresAt]` per line; a first line naming the columns (`address,…`), blank lines
 * and lines starting with `#` are skipped. Fields are not quoted: addresses in this file have no
 * commas. Each line is checked as `POST /v1/suppressions` checks a body.
 */
export function parseSuppressionCsv(text: string): {
  entries: SuppressionEntry[];
  refused: ImportReport["refused"];
} {
  const entries: SuppressionEntry[] = [];
  const refused: ImportReport["refused"] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const number = index + 1;
    const content = raw.trim();
    if (content === "" || content.startsWith("#")) return;
    const fields = content.split(",").map((field) => field.trim().replace(/^"(.*)"$/, "$1"));
    if (number === 1 && fields[0]?.toLowerCase() === "address") return;
    if (fields.length < 2 || fields.length > 3) {
      refused.push({ line: number, problem: "expected address,reason[,expiresAt]" });
      return;
    }
    const parsed = suppressionInputSchema.safeParse({
      address: fields[0],
      reason: fields[1],
      expiresAt: fields[2] || undefined,
    });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      refused.push({ line: number, problem: `${issue?.path.join(".") || "line"}: ${issue?.message}` });
      return;
    }
    const { address, reason, expiresAt } = parsed.data;
    entries.push({ address, reason, expiresAt: expiresAt ? new Date(expiresAt) : null });
  });
  return { entries, refused };
}

interface AddOptions extends OutputOptions {
  reason: (typeof suppressionReasons)[number];
  expiresAt?: string;
}

interface ListOptions extends OutputOptions {
  q?: string;
}

/** `postern suppressions list|add|remove|import`: a project's suppressions (docs/suppressions.md). */
export function registerSuppressionCommands(program: Command): void {
  const suppressions = program
    .command("suppressions")
    .description("the addresses and domains a project does not send to");
  suppressions
    .command("list")
    .description("list a project's suppressions in effect, by address")
    .argument("<projectId>", "project id")
    .option("--q <text>", "only addresses containing this text")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: ListOptions) =>
      operate(options, async (runtime) => {
        const service = suppressionsOf(runtime);
        const items: SuppressionView[] = [];
        // Every page: an operator's listing is the whole list.
        for (let after: string | undefined; ; ) {
          const page = await service.list(validProjectId(projectId), { q: options.q, after, limit: 200 });
          items.push(...page.items);
          if (!page.nextCursor) break;
          after = page.nextCursor;
        }
        return {
          json: { items },
          text: items.length === 0 ? "no suppressions" : items.map(line).join("\n"),
        };
      }),
    );
  suppressions
    .command("add")
    .description("suppress an address, or every address of a domain (*@example.com)")
    .argument("<projectId>", "project id")
    .argument("<address>", "user@example.com or *@example.com", validAddress)
    .addOption(new Option("--reason <reason>", "why").choices([...suppressionReasons]).default("manual"))
    .option("--expires-at <date>", "ISO 8601 date-time from which it no longer applies")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, address: string, options: AddOptions) =>
      operate(options, async (runtime) => {
        const input = suppressionInputSchema.safeParse({
          address,
          reason: options.reason,
          expiresAt: options.expiresAt,
        });
        if (!input.success)
          throw new CommandFailure(
            exitCodes.usage,
            "validation_error",
            `--expires-at: ${input.error.issues[0]?.message ?? "invalid"}`,
          );
        const { expiresAt } = input.data;
        const outcome = await suppressionsOf(runtime).add(
          validProjectId(projectId),
          [{ address, reason: input.data.reason, expiresAt: expiresAt ? new Date(expiresAt) : null }],
          cliActor,
        );
        const item = outcome?.items[0];
        if (!item) projectNotFound(projectId);
        return { json: item, text: `suppressed ${line(item)}` };
      }),
    );
  suppressions
    .command("remove")
    .description("remove a suppression: the address (or domain) gets mail again")
    .argument("<projectId>", "project id")
    .argument("<address>", "user@example.com or *@example.com", validAddress)
    .option("--json", "print JSON for scripts")
    .action((projectId: string, address: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        if (!(await suppressionsOf(runtime).remove(validProjectId(projectId), address, cliActor)))
          throw new CommandFailure(exitCodes.notFound, "not_found", `no suppression of ${address}`);
        return { json: { address, removed: true }, text: `removed suppression of ${address}` };
      }),
    );
  suppressions
    .command("import")
    .description("add the suppressions of a CSV file: address,reason[,expiresAt] per line")
    .argument("<projectId>", "project id")
    .requiredOption("--csv <file>", "the CSV file (a first line naming the columns is skipped)")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions & { csv: string }) =>
      operate(options, async (runtime) => {
        const id = validProjectId(projectId);
        const text = await readFile(options.csv, "utf8").catch((error: Error) => {
          throw new CommandFailure(exitCodes.usage, "validation_error", `--csv: ${error.message}`);
        });
        const { entries, refused } = parseSuppressionCsv(text);
        const report: ImportReport = { added: 0, updated: 0, refused };
        const service = suppressionsOf(runtime);
        for (let start = 0; start < entries.length; start += importChunk) {
          const outcome = await service.add(id, entries.slice(start, start + importChunk), cliActor);
          if (!outcome) projectNotFound(id);
          report.added += outcome.added.length;
          report.updated += outcome.updated.length;
        }
        const refusals = refused.map((r) => `line ${r.line}: ${r.problem}`);
        return {
          json: report,
          text: [
            `added ${report.added}, updated ${report.updated}, refused ${refused.length}`,
            ...refusals,
          ].join("\n"),
        };
      }),
    );
}
