import { Command, Option } from "commander";
import { registerAuditCommands } from "./commands/audit";
import { registerSecretCommands } from "./commands/credentials";
import { registerDomainCommands } from "./commands/domains";
import { registerEventCommands } from "./commands/events";
import { registerMessageCommands } from "./commands/messages";
import { exitCodes } from "./commands/operator";
import { registerProjectCommands } from "./commands/project";
import { registerRouteCommands } from "./commands/routes";
import { registerRulesCommands } from "./commands/rules";
import { startCommand } from "./commands/start";
import { registerSuppressionCommands } from "./commands/suppressions";
import { registerWebhookCommands } from "./commands/webhooks";
import { roleNames } from "./roles";

const program = new Command()
  .name("postern")
  .description("Postern: authenticated, multi-tenant SMTP relay")
  .showHelpAfterError()
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    "after",
    "\nExit codes: 0 done, 1 Postern unavailable (configuration, database, Redis), 2 invalid usage or input,\n3 not found, 4 refused in the current state (e.g. deleting a project with pending mail).",
  );

program
  .command("start")
  .description(`run the relay: every role, or only the named ones (${roleNames.join(", ")})`)
  .argument("[roles...]", "roles to run in this process")
  // Internal: a worker thread started by `postern start` (apps/cli/src/worker-threads.ts).
  .addOption(new Option("--supervised").hideHelp())
  .action((roles: string[], options: { supervised?: boolean }) => startCommand(roles, options));

registerProjectCommands(program);
registerSecretCommands(program);
registerAuditCommands(program);
registerMessageCommands(program);
registerEventCommands(program);
registerRulesCommands(program);
registerRouteCommands(program);
registerDomainCommands(program);
registerSuppressionCommands(program);
registerWebhookCommands(program);

// Usage errors (unknown command or option, missing argument) exit 2 like other Unix tools; --help exits 0.
for (const command of [program, ...allSubcommands(program)]) {
  command.exitOverride((error) => process.exit(error.exitCode === 0 ? exitCodes.ok : exitCodes.usage));
}

function allSubcommands(command: Command): Command[] {
  return command.commands.flatMap((sub) => [sub, ...allSubcommands(sub)]);
}

await program.parseAsync(process.argv);
