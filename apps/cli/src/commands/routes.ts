import { readFile } from "node:fs/promises";
import { createRouteService, type RoutesView, routesInputSchema } from "@postern/projects";
import type { Command } from "commander";
import type { Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate } from "./operator";
import { cliActor, validProjectId } from "./project";

/**
 * `postern routes get|set`: a project's routes (docs/routing.md). `set` reads the routes from a
 * file (the JSON of `PUT /v1/routes`), so that upstream passwords stay off the command line.
 */
export function registerRouteCommands(program: Command): void {
  const routes = program.command("routes").description("show and replace a project's routes");
  routes
    .command("get")
    .description("print a project's routes and their version (upstream passwords never shown)")
    .argument("<projectId>", "project id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const view = await serviceOf(runtime).get(validProjectId(projectId));
        if (!view) throw new CommandFailure(exitCodes.notFound, "not_found", `no project ${projectId}`);
        return { json: view, text: describe(view) };
      }),
    );
  routes
    .command("set")
    .description("replace a project's routes with a file's {version, routes} (the version read with get)")
    .argument("<projectId>", "project id")
    .requiredOption("--file <path>", 'JSON file: {"version": n, "routes": [...]}')
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions & { file: string }) =>
      operate(options, async (runtime) => {
        const input = routesInputSchema.safeParse(await readJson(options.file));
        if (!input.success) {
          const issue = input.error.issues[0];
          throw new CommandFailure(
            exitCodes.usage,
            "validation_error",
            `--file: ${issue?.path.join(".") || "body"}: ${issue?.message ?? "invalid"}`,
          );
        }
        const result = await serviceOf(runtime).replace(validProjectId(projectId), input.data, cliActor);
        if (!result.ok) {
          const exitCode =
            result.reason === "not_found"
              ? exitCodes.notFound
              : result.reason === "version_conflict"
                ? exitCodes.conflict
                : exitCodes.usage;
          throw new CommandFailure(exitCode, result.reason, result.message);
        }
        return { json: result.value, text: `routes of ${projectId} now at version ${result.value.version}` };
      }),
    );
}

function serviceOf(runtime: Runtime) {
  return createRouteService({ db: runtime.db, redis: runtime.redis, config: runtime.config });
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new CommandFailure(
      exitCodes.usage,
      "validation_error",
      `--file: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CommandFailure(exitCodes.usage, "validation_error", `--file: ${path} is not JSON`);
  }
}

function describe(view: RoutesView): string {
  const lines = view.routes.map(
    ({ match, target }) =>
      `  ${match.padEnd(30)} ${target.type}${target.urls ? ` ${target.urls.join(", ")}` : ""}`,
  );
  return [
    `version ${view.version}`,
    ...(lines.length > 0 ? lines : ["  (no routes: the project's upstream)"]),
  ].join("\n");
}
