import { isMainThread, threadId } from "node:worker_threads";
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger } from "pino";

/**
 * Every field that can carry a secret, wherever it sits in a log object. pino removes them
 * before serialisation, so a careless `log.info({ req })` cannot leak them.
 */
export const redactedPaths = [
  "password",
  "secret",
  "token",
  "apiToken",
  "adminToken",
  "encryptionKey",
  "authorization",
  "upstreamSecret",
  "*.password",
  "*.secret",
  "*.token",
  "*.apiToken",
  "*.adminToken",
  "*.encryptionKey",
  "*.authorization",
  "*.upstreamSecret",
  "*.pass",
  "auth.pass",
  "*.auth.pass",
  "req.headers.authorization",
  "headers.authorization",
  "smtp.password",
];

export function createLogger(
  options: { level: string; name?: string },
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level: options.level,
      name: options.name,
      redact: { paths: redactedPaths, censor: "[redacted]" },
      // The delivery worker's threads (WORKER_THREADS) share the process's pid: `thread` tells
      // their lines apart from each other and from the main thread's, which has none.
      base: isMainThread ? { pid: process.pid } : { pid: process.pid, thread: threadId },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
