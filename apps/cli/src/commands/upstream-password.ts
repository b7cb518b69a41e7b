import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import type { Command } from "commander";
import { exitCodes } from "./exit-codes";
import { CommandFailure } from "./operator";

/**
 * An upstream URL's password reaches the CLI from a file, from UPSTREAM_PASSWORD or from a prompt,
 * never from the command line, where `ps` and shell history show it to every user of the machine.
 */
export interface UpstreamPasswordOptions {
  upstreamPasswordFile?: string;
  askUpstreamPassword?: boolean;
}

export function withUpstreamPasswordOptions(command: Command): Command {
  return command
    .option("--upstream-password-file <path>", "read the upstream URL's password from this file (one line)")
    .option("--ask-upstream-password", "prompt for the upstream URL's password (not echoed)");
}

/**
 * The URL with the password from the chosen source put in, or as given when it names no user.
 * A password written in the URL itself is refused, naming the ways that keep it off the command line.
 */
export async function withUpstreamPassword(
  upstream: string | undefined,
  options: UpstreamPasswordOptions,
  fromEnvironment: string | undefined,
  option = "--upstream",
): Promise<string | undefined> {
  if (upstream === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    return upstream; // the URL's own validation names the problem
  }
  if (url.password) {
    throw new CommandFailure(
      exitCodes.usage,
      "validation_error",
      `${option}: a password on the command line is visible to every user (ps); give it with --upstream-password-file, UPSTREAM_PASSWORD or --ask-upstream-password`,
    );
  }
  const password = await passwordFrom(options, fromEnvironment);
  if (password === undefined) return upstream;
  if (!url.username) {
    throw new CommandFailure(
      exitCodes.usage,
      "validation_error",
      `${option}: a password needs a user in the URL`,
    );
  }
  url.password = encodeURIComponent(password);
  return url.toString();
}

async function passwordFrom(
  options: UpstreamPasswordOptions,
  fromEnvironment: string | undefined,
): Promise<string | undefined> {
  if (options.upstreamPasswordFile !== undefined) {
    try {
      return (await readFile(options.upstreamPasswordFile, "utf8")).replace(/\r?\n$/, "");
    } catch (error) {
      throw new CommandFailure(
        exitCodes.usage,
        "validation_error",
        `--upstream-password-file: cannot read ${options.upstreamPasswordFile} (${(error as NodeJS.ErrnoException).code ?? "error"})`,
      );
    }
  }
  if (options.askUpstreamPassword) return prompt("upstream password: ");
  return fromEnvironment;
}

/** Reads one line from the terminal without echoing it. */
function prompt(question: string): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new CommandFailure(
      exitCodes.usage,
      "validation_error",
      "--ask-upstream-password needs a terminal; use --upstream-password-file or UPSTREAM_PASSWORD",
    );
  }
  process.stderr.write(question);
  const silent = new Writable({ write: (_chunk, _encoding, done) => done() });
  const reader = createInterface({ input: process.stdin, output: silent, terminal: true });
  return new Promise((resolve) =>
    reader.question("", (answer) => {
      reader.close();
      process.stderr.write("\n");
      resolve(answer);
    }),
  );
}
