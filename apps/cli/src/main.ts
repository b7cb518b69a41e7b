import { Command } from "commander";
import { startCommand } from "./commands/start";
import { roleNames } from "./roles";

const program = new Command()
  .name("postern")
  .description("Postern: authenticated, multi-tenant SMTP relay")
  .showHelpAfterError()
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2));

program
  .command("start")
  .description(`run the relay: every role, or only the named ones (${roleNames.join(", ")})`)
  .argument("[roles...]", "roles to run in this process")
  .action(startCommand);

await program.parseAsync(process.argv);
