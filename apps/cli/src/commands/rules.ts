import { readFile } from "node:fs/promises";
import {
  describeRulesError,
  type RuleSet,
  readRuleSet,
  replaceRuleSet,
  ruleSetInputSchema,
} from "@postern/rules";
import type { Command } from "commander";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate } from "./operator";
import { cliActor, validProjectId } from "./project";

interface RulesOptions extends OutputOptions {
  project: string;
}

/** One line per rule for people: `1. deny  no-exe  {"attachmentExtensions":[".exe"]}`. */
function describeRuleSet(ruleSet: RuleSet): string {
  const lines = ruleSet.rules.map(
    (rule, index) => `${index + 1}. ${rule.action.padEnd(5)}  ${rule.name}  ${JSON.stringify(rule.match)}`,
  );
  return [
    `version ${ruleSet.version}`,
    ...(lines.length > 0 ? lines : ["no rules: every message is allowed"]),
  ].join("\n");
}

/**
 * `postern rules get|set --project <id>`: a project's rules (docs/rules.md), through the same
 * functions as `GET|PUT /v1/rules` (the same validation, version check, audit event and
 * invalidation on every node; the actor is `cli`). `get --json` prints what `set --file` reads.
 */
export function registerRulesCommands(program: Command): void {
  const rules = program.command("rules").description("read and replace a project's rules");
  rules
    .command("get")
    .description("the project's rules, in the order they are judged, and their version")
    .requiredOption("--project <id>", "project id")
    .option("--json", "print { version, rules }, the input of `rules set --file`")
    .action((options: RulesOptions) =>
      operate(options, async (runtime) => {
        const ruleSet = await readRuleSet(runtime.db, validProjectId(options.project));
        return { json: ruleSet, text: describeRuleSet(ruleSet) };
      }),
    );
  rules
    .command("set")
    .description(
      "replace the project's rules with those of a file ({ version, rules }, as `rules get --json` prints)",
    )
    .requiredOption("--project <id>", "project id")
    .requiredOption("--file <path>", "JSON file: { version, rules }")
    .option("--json", "print JSON for scripts")
    .action((options: RulesOptions & { file: string }) =>
      operate(options, async (runtime) => {
        const projectId = validProjectId(options.project);
        const input = ruleSetInputSchema.safeParse(await readJson(options.file));
        if (!input.success)
          throw new CommandFailure(
            exitCodes.usage,
            "invalid_rules",
            `${options.file}: ${describeRulesError(input.error)}`,
          );
        const outcome = await replaceRuleSet(
          { db: runtime.db, redis: runtime.redis, keyPrefix: runtime.config.redisKeyPrefix },
          projectId,
          input.data,
          cliActor,
        );
        if (!outcome.ok) {
          if (outcome.reason === "not_found")
            throw new CommandFailure(exitCodes.notFound, "not_found", outcome.message);
          throw new CommandFailure(exitCodes.conflict, "version_conflict", outcome.message);
        }
        return { json: outcome.value, text: describeRuleSet(outcome.value) };
      }),
    );
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new CommandFailure(exitCodes.usage, "invalid_rules", `${file}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CommandFailure(
      exitCodes.usage,
      "invalid_rules",
      `${file}: not JSON (${(error as Error).message})`,
    );
  }
}
