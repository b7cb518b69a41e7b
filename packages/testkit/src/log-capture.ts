import { Writable } from "node:stream";
import { createLogger, type Logger } from "@postern/telemetry";

export interface CapturedLog {
  log: Logger;
  /** Everything logged so far, as pino's JSON lines. */
  text(): string;
}

/**
 * A logger whose output a test reads: to assert what a role logged, and to search it for
 * secrets that must never be logged.
 */
export function captureLog(level: string): CapturedLog {
  let output = "";
  const destination = new Writable({
    write(chunk, _encoding, done) {
      output += chunk.toString();
      done();
    },
  });
  return { log: createLogger({ level }, destination), text: () => output };
}
