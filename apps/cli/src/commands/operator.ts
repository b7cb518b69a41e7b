import { exitWithStartupError, openRuntime, type Runtime } from "../runtime";
import { exitCodes } from "./exit-codes";

/** An expected refusal: printed as one line on stderr (or as JSON with --json), then the exit code. */
export class CommandFailure extends Error {
  override readonly name = "CommandFailure";

  constructor(
    readonly exitCode: (typeof exitCodes)[keyof typeof exitCodes],
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface OutputOptions {
  json?: boolean;
}

/**
 * Runs an operator command against the database directly (attaching to a running embedded
 * Postern in the same DATA_DIR, or starting its services for the duration), then exits.
 */
export async function operate(
  options: OutputOptions,
  /** `bytes`: written as they are without --json (`messages raw`), in place of a line of text. */
  command: (runtime: Runtime) => Promise<{ json: unknown } & ({ text: string } | { bytes: Buffer })>,
): Promise<never> {
  let runtime: Runtime;
  try {
    runtime = await openRuntime({ attach: true, logFd: 2 });
  } catch (error) {
    exitWithStartupError(error);
  }
  let exitCode: number = exitCodes.ok;
  try {
    const result = await command(runtime);
    if (options.json) process.stdout.write(`${JSON.stringify(result.json, null, 2)}\n`);
    else if ("bytes" in result) await new Promise((done) => process.stdout.write(result.bytes, done));
    else process.stdout.write(`${result.text}\n`);
  } catch (error) {
    if (error instanceof CommandFailure) {
      exitCode = error.exitCode;
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ error: { code: error.code, message: error.message } })}\n`);
      }
      process.stderr.write(`postern: ${error.message}\n`);
    } else {
      exitCode = exitCodes.unavailable;
      process.stderr.write(`postern: ${(error as Error).message}\n`);
    }
  } finally {
    await runtime.close();
  }
  process.exit(exitCode);
}

/** Aligned "key  value" lines for people; scripts use --json. */
export function table(rows: [string, string | number | null | undefined][]): string {
  const width = Math.max(...rows.map(([key]) => key.length));
  return rows.map(([key, value]) => `${key.padEnd(width)}  ${value ?? "-"}`).join("\n");
}
