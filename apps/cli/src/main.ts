import { Command } from "commander";
import { exitCodes } from "./commands/exit-codes";

type Register = (program: Command) => void;

/**
 * Each top-level command's module, imported only when that command runs: a module brings the
 * packages its command needs (Prisma, BullMQ, mailauth, Fastify, …), and evaluating all of them
 * took most of a command's start. Listed in the order `--help` shows them.
 */
const commands = new Map<string, () => Promise<Register>>(
  Object.entries({
    start: async () => (await import("./commands/start")).registerStartCommand,
    project: async () => (await import("./commands/project")).registerProjectCommands,
    credentials: async () => (await import("./commands/credentials")).registerCredentialCommands,
    token: async () => (await import("./commands/credentials")).registerTokenCommands,
    audit: async () => (await import("./commands/audit")).registerAuditCommands,
    messages: async () => (await import("./commands/messages")).registerMessageCommands,
    events: async () => (await import("./commands/events")).registerEventCommands,
    rules: async () => (await import("./commands/rules")).registerRulesCommands,
    routes: async () => (await import("./commands/routes")).registerRouteCommands,
    domains: async () => (await import("./commands/domains")).registerDomainCommands,
    suppressions: async () => (await import("./commands/suppressions")).registerSuppressionCommands,
    webhooks: async () => (await import("./commands/webhooks")).registerWebhookCommands,
  }),
);

const program = new Command()
  .name("postern")
  .description("Postern: authenticated, multi-tenant SMTP relay")
  .showHelpAfterError()
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    "after",
    "\nExit codes: 0 done, 1 Postern unavailable (configuration, database, Redis), 2 invalid usage or input,\n3 not found, 4 refused in the current state (e.g. deleting a project with pending mail).",
  );

// The program has no options of its own, so the first word that is not one names the command.
// Without a known one (--help, `help`, a typo) every command is loaded, to be listed or suggested.
const named = commands.get(process.argv.slice(2).find((word) => !word.startsWith("-")) ?? "");
for (const load of named ? [named] : commands.values()) (await load())(program);

// Usage errors (unknown command or option, missing argument) exit 2 like other Unix tools; --help exits 0.
for (const command of [program, ...allSubcommands(program)]) {
  command.exitOverride((error) => process.exit(error.exitCode === 0 ? exitCodes.ok : exitCodes.usage));
}

function allSubcommands(command: Command): Command[] {
  return command.commands.flatMap((sub) => [sub, ...allSubcommands(sub)]);
}

await program.parseAsync(process.argv);
