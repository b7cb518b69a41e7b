import type { Command } from "commander";
import { exitCodes } from "./exit-codes";
import { CommandFailure, type OutputOptions, operate, table } from "./operator";
import { cliActor, projectServiceOf, validProjectId } from "./project";

/** `postern credentials create|revoke`. */
export function registerCredentialCommands(program: Command): void {
  const credentials = program.command("credentials").description("issue and revoke SMTP credentials");
  credentials
    .command("create")
    .description("issue an SMTP credential (password printed once)")
    .argument("<projectId>", "project id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const issued = await projectServiceOf(runtime).createCredential(validProjectId(projectId), cliActor);
        if (!issued) throw new CommandFailure(exitCodes.notFound, "not_found", `no project ${projectId}`);
        return {
          json: issued,
          text: `Shown once; store it now:\n${table([
            ["id", issued.id],
            ["SMTP username", issued.username],
            ["SMTP password", issued.password],
          ])}`,
        };
      }),
    );
  credentials
    .command("revoke")
    .description("revoke an SMTP credential at once, on every SMTP node")
    .argument("<projectId>", "project id")
    .argument("<credentialId>", "credential id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, credentialId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const result = await projectServiceOf(runtime).revokeCredential(
          validProjectId(projectId),
          validProjectId(credentialId, "credential id"),
          cliActor,
        );
        if (!result.ok) throw new CommandFailure(exitCodes.notFound, result.reason, result.message);
        return {
          json: { id: credentialId, revokedAt: result.value.revokedAt.toISOString() },
          text: `revoked credential ${credentialId}`,
        };
      }),
    );
}

/** `postern token create|revoke`. */
export function registerTokenCommands(program: Command): void {
  const token = program.command("token").description("issue and revoke project API tokens");
  token
    .command("create")
    .description("issue a project API token (printed once)")
    .argument("<projectId>", "project id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const issued = await projectServiceOf(runtime).createToken(validProjectId(projectId), cliActor);
        if (!issued) throw new CommandFailure(exitCodes.notFound, "not_found", `no project ${projectId}`);
        return {
          json: issued,
          text: `Shown once; store it now:\n${table([
            ["id", issued.id],
            ["API token", issued.token],
          ])}`,
        };
      }),
    );
  token
    .command("revoke")
    .description("revoke a project API token")
    .argument("<projectId>", "project id")
    .argument("<tokenId>", "token id")
    .option("--json", "print JSON for scripts")
    .action((projectId: string, tokenId: string, options: OutputOptions) =>
      operate(options, async (runtime) => {
        const result = await projectServiceOf(runtime).revokeToken(
          validProjectId(projectId),
          validProjectId(tokenId, "token id"),
          cliActor,
        );
        if (!result.ok) throw new CommandFailure(exitCodes.notFound, result.reason, result.message);
        return {
          json: { id: tokenId, revokedAt: result.value.revokedAt.toISOString() },
          text: `revoked token ${tokenId}`,
        };
      }),
    );
}
