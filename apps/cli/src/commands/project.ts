import {
  type Actor,
  createProjectService,
  type ProjectService,
  projectDetailView,
  projectInputSchema,
  projectPatchSchema,
  projectView,
} from "@postern/projects";
import type { Command } from "commander";
import type { z } from "zod";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate, table } from "./operator";
import {
  type UpstreamPasswordOptions,
  withUpstreamPassword,
  withUpstreamPasswordOptions,
} from "./upstream-password";

export const cliActor: Actor = { actor: "cli" };

export function projectServiceOf(runtime: Runtime): ProjectService {
  return createProjectService({ db: runtime.db, redis: runtime.redis, config: runtime.config });
}

/** zod's verdict as the one line an operator reads, naming the option. */
function validated<T extends z.ZodType>(
  schema: T,
  input: unknown,
  options: Record<string, string>,
): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const path = issue?.path.join(".") ?? "";
  const option = options[path] ?? options[String(issue?.path[0])] ?? path;
  throw new CommandFailure(exitCodes.usage, "validation_error", `${option}: ${issue?.message ?? "invalid"}`);
}

const optionNames: Record<string, string> = {
  name: "--name",
  upstream: "--upstream",
  "quota.perMinute": "--quota-per-minute",
  "quota.daily": "--quota-daily",
  senderDomains: "--sender-domain",
  maxRecipients: "--max-recipients",
  mode: "--mode",
  holdTtlMinutes: "--hold-ttl-minutes",
  holdExpiry: "--hold-expiry",
  dedupWindowSeconds: "--dedup-window-seconds",
  returnPath: "--return-path",
  localAddresses: "--local-address",
  "": "options",
};

interface SettingsOptions extends OutputOptions, UpstreamPasswordOptions {
  name?: string;
  upstream?: string;
  quotaPerMinute?: string;
  quotaDaily?: string;
  senderDomain?: string[];
  maxRecipients?: string;
  mode?: string;
  holdTtlMinutes?: string;
  holdExpiry?: string;
  dedupWindowSeconds?: string;
  returnPath?: string;
  localAddress?: string[];
}

const number = (value: string | undefined) => (value === undefined ? undefined : Number(value));

async function settingsFrom(options: SettingsOptions, runtime: Runtime) {
  const quota =
    options.quotaPerMinute === undefined && options.quotaDaily === undefined
      ? undefined
      : { perMinute: number(options.quotaPerMinute), daily: number(options.quotaDaily) };
  return {
    name: options.name,
    upstream: await withUpstreamPassword(options.upstream, options, runtime.config.upstreamPassword),
    quota,
    senderDomains: options.senderDomain,
    maxRecipients: number(options.maxRecipients),
    mode: options.mode,
    holdTtlMinutes: number(options.holdTtlMinutes),
    holdExpiry: options.holdExpiry,
    dedupWindowSeconds: number(options.dedupWindowSeconds),
    returnPath: options.returnPath,
    localAddresses: options.localAddress,
  };
}

function notFound(what: string): never {
  throw new CommandFailure(exitCodes.notFound, "not_found", what);
}

function withSettingsOptions(command: Command): Command {
  return withUpstreamPasswordOptions(command)
    .option(
      "--upstream <url>",
      "smtp://[user@]host:port[?tls=required|none][&verify=false] or smtps://... (password: see below)",
    )
    .option("--quota-per-minute <n>", "recipients per minute")
    .option("--quota-daily <n>", "recipients per day")
    .option("--max-recipients <n>", "recipients per message")
    .option("--sender-domain <domain>", "allowed sender domain (repeat for several; none: any)", collect)
    .option("--json", "print JSON for scripts");
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function describeProject(view: ReturnType<typeof projectView>): string {
  return table([
    ["id", view.id],
    ["name", view.name],
    ["status", view.status],
    ["upstream", view.upstream],
    ["quota", `${view.quota.perMinute}/minute, ${view.quota.daily}/day`],
    ["max recipients", view.maxRecipients],
    ["sender domains", view.senderDomains.length > 0 ? view.senderDomains.join(", ") : "any"],
    ["mode", view.mode],
    ["holds", `${view.holdExpiry} after ${view.holdTtlMinutes} minutes`],
    ["duplicates", view.dedupWindowSeconds > 0 ? `within ${view.dedupWindowSeconds} s` : "off"],
    ["return path", view.returnPath === "verp" ? "verp (bounce+<token>@BOUNCE_DOMAIN)" : "the sender's"],
    ["created", view.createdAt],
  ]);
}

export function registerProjectCommands(program: Command): void {
  const project = program.command("project").description("create, inspect and change projects");

  withSettingsOptions(
    project
      .command("create")
      .description("create a project with one SMTP credential and one API token (secrets printed once)")
      .requiredOption("--name <name>", "project name"),
  ).action((options: SettingsOptions) =>
    operate(options, async (runtime) => {
      const input = validated(projectInputSchema, await settingsFrom(options, runtime), optionNames);
      const result = await projectServiceOf(runtime).create(input, cliActor);
      if (!result.ok) throw new CommandFailure(exitCodes.usage, result.reason, `--${result.message}`);
      const view = projectView(result.value.project);
      return {
        json: { ...view, smtp: result.value.smtp, apiToken: result.value.apiToken },
        text: [
          describeProject(view),
          "",
          "Shown once; store them now:",
          table([
            ["SMTP username", result.value.smtp.username],
            ["SMTP password", result.value.smtp.password],
            ["API token", result.value.apiToken.token],
          ]),
        ].join("\n"),
      };
    }),
  );

  project
    .command("list")
    .description("list every project, newest first")
    .option("--json", "print JSON for scripts")
    .action((options: OutputOptions) =>
      operate(options, async (runtime) => {
        const views = (await projectServiceOf(runtime).list()).map(projectView);
        const text =
          views.length === 0
            ? "no projects"
            : views.map((v) => `${v.id}  ${v.status.padEnd(9)}  ${v.name}  (${v.upstream})`).join("\n");
        return { json: { items: views }, text };
      }),
    );

  project
    .command("show")
    .description("show a project with its credentials and tokens (never their secrets)")
    .argument("<id>", "project id")
    .option("--json", "print JSON for scripts")
    .action((id: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const found = await projectServiceOf(runtime).show(validProjectId(id));
        if (!found) notFound(`no project ${id}`);
        const view = projectDetailView(found);
        const lines = [
          describeProject(view),
          "",
          "SMTP credentials:",
          ...view.credentials.map(
            (c) => `  ${c.id}  ${c.username}  ${c.revokedAt ? `revoked ${c.revokedAt}` : "active"}`,
          ),
          "API tokens:",
          ...view.tokens.map(
            (t) => `  ${t.id}  ${t.prefix}…  ${t.revokedAt ? `revoked ${t.revokedAt}` : "active"}`,
          ),
        ];
        return { json: view, text: lines.join("\n") };
      }),
    );

  withSettingsOptions(
    project
      .command("update")
      .description("change a project's settings")
      .argument("<id>", "project id")
      .option("--name <name>", "project name")
      .option("--mode <mode>", "live, or sandbox: every check applies, nothing is delivered")
      .option("--hold-ttl-minutes <n>", "minutes a held message waits for approve or deny")
      .option("--hold-expiry <action>", "approve or deny: what becomes of a held message nobody acted on")
      .option(
        "--dedup-window-seconds <n>",
        "resubmissions within this many seconds answer the first id; 0: off",
      )
      .option(
        "--return-path <kind>",
        "sender (the envelope sender as given) or verp (bounce+<token>@BOUNCE_DOMAIN: bounces come back)",
      )
      .option(
        "--local-address <ip>",
        "source address of direct delivery, an address of this host (repeat for several, used in turn)",
        collect,
      ),
  ).action((id: string, options: SettingsOptions) =>
    operate(options, async (runtime) =>
      update(
        projectServiceOf(runtime),
        id,
        validated(projectPatchSchema, await settingsFrom(options, runtime), optionNames),
      ),
    ),
  );

  for (const [verb, status, what] of [
    ["suspend", "suspended", "refuse the project's SMTP traffic (535 at AUTH) until resumed"],
    ["resume", "active", "accept the project's SMTP traffic again"],
  ] as const) {
    project
      .command(verb)
      .description(what)
      .argument("<id>", "project id")
      .option("--json", "print JSON for scripts")
      .action((id: string, options: OutputOptions) =>
        operate(options, (runtime) => update(projectServiceOf(runtime), id, { status })),
      );
  }

  project
    .command("delete")
    .description("delete a project; refused while messages are queued or deferred unless --force")
    .argument("<id>", "project id")
    .option("--force", "delete even if accepted messages are still waiting for delivery (they are dropped)")
    .option("--json", "print JSON for scripts")
    .action((id: string, options: OutputOptions & { force?: boolean }) =>
      operate(options, async (runtime) => {
        const result = await projectServiceOf(runtime).delete(
          validProjectId(id),
          { force: options.force === true },
          cliActor,
        );
        if (!result.ok) {
          if (result.reason === "not_found") notFound(result.message);
          throw new CommandFailure(exitCodes.conflict, result.reason, result.message);
        }
        return { json: { id, deleted: true }, text: `deleted project ${id}` };
      }),
    );
}

async function update(projects: ProjectService, id: string, patch: Parameters<ProjectService["update"]>[1]) {
  const result = await projects.update(validProjectId(id), patch, cliActor);
  if (!result.ok) {
    if (result.reason === "not_found") notFound(result.message);
    throw new CommandFailure(exitCodes.usage, result.reason, `--${result.message}`);
  }
  const view = projectView(result.value);
  return { json: view, text: describeProject(view) };
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Ids are UUIDs: anything else cannot name a project (and would be a database error). */
export function validProjectId(id: string, what = "project id"): string {
  if (!uuid.test(id))
    throw new CommandFailure(exitCodes.usage, "validation_error", `${what}: must be a UUID`);
  return id;
}
