import { createRequire } from "node:module";
import { isatty } from "node:tty";
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
  "upstreamPassword",
  "*.password",
  "*.secret",
  "*.token",
  "*.apiToken",
  "*.adminToken",
  "*.encryptionKey",
  "*.authorization",
  "*.upstreamSecret",
  "*.upstreamPassword",
  "*.pass",
  "auth.pass",
  "*.auth.pass",
  "req.headers.authorization",
  "headers.authorization",
  "smtp.password",
];

/**
 * A value that looks like one of Postern's secrets (webhook signing secrets `whsec_…` included), in
 * any case, anywhere in a string: the field
 * names above miss a secret that sits where it does not belong (a client's username, a message).
 */
const secretLookalike = /pst_(?:secret|api|admin)_[A-Za-z0-9_-]*|whsec_[A-Za-z0-9+/=]*/gi;

/** Masks secret look-alikes in the string values of a log object (copying only what changes). */
export function maskSecretLookalikes<T>(value: T, depth = 0): T {
  if (typeof value === "string") {
    secretLookalike.lastIndex = 0;
    return (secretLookalike.test(value) ? value.replace(secretLookalike, "[redacted]") : value) as T;
  }
  if (depth >= 4 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const masked = maskSecretLookalikes(item, depth + 1);
      if (masked === item) return;
      copy ??= [...value];
      copy[i] = masked;
    });
    return (copy ?? value) as T;
  }
  // Errors and other class instances go to pino's serializers untouched.
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const record = value as Record<string, unknown>;
  let copy: Record<string, unknown> | undefined;
  for (const [key, item] of Object.entries(record)) {
    const masked = maskSecretLookalikes(item, depth + 1);
    if (masked === item) continue;
    copy ??= { ...record };
    copy[key] = masked;
  }
  return (copy ?? value) as T;
}

export function createLogger(
  options: { level: string; name?: string },
  destination?: DestinationStream,
): Logger {
  return pino(
    {
      level: options.level,
      name: options.name,
      redact: { paths: redactedPaths, censor: "[redacted]" },
      formatters: { log: (object) => maskSecretLookalikes(object) },
      // The delivery worker's threads (WORKER_THREADS) share the process's pid: `thread` tells
      // their lines apart from each other and from the main thread's, which has none.
      base: isMainThread ? { pid: process.pid } : { pid: process.pid, thread: threadId },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** LOG_FORMAT: `auto` is `pretty` where the lines go to a terminal, `json` elsewhere. */
export type LogFormat = "auto" | "pretty" | "json";

/**
 * The stream a process's log lines go to: file descriptor `fd` (stdout; the operator CLI writes
 * its log to stderr so that its stdout stays parseable), as JSON lines for collectors or as
 * pino-pretty's one line per entry for people. Either way pino has redacted the entry first: the
 * pretty form is made from the JSON line. pino-pretty runs as a stream in the logging thread, not
 * as a pino transport (a worker thread of its own for every Postern thread), and is only loaded
 * when used. Both write synchronously, so no line is lost when the process exits.
 */
export function logDestination(format: LogFormat, fd = 1): DestinationStream {
  const terminal = isatty(fd);
  if (format === "json" || (format === "auto" && !terminal))
    return pino.destination({ dest: fd, sync: true });
  // Made at the first line: an operator command in a terminal mostly logs nothing, and loading
  // pino-pretty took a tenth of such a command's time.
  let pretty: DestinationStream | undefined;
  return {
    write(line: string) {
      pretty ??= prettyDestination(fd, terminal);
      pretty.write(line);
    },
  };
}

function prettyDestination(fd: number, terminal: boolean): DestinationStream {
  const pretty = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
  return pretty.build({
    destination: fd,
    sync: true,
    colorize: terminal,
    translateTime: "SYS:HH:MM:ss.l",
    // The pid is the same on every line of a process; a worker thread's lines keep `thread`.
    ignore: "pid,hostname",
    // The entry's fields as JSON after the message, on the same line: one line per event, as in
    // the JSON form, so that grep and less work on it.
    singleLine: true,
  });
}
