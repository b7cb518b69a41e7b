import type { Logger } from "@postern/telemetry";
import type { SmtpMetrics } from "./metrics";

/**
 * In-flow control, Postern's `in_flow_delay`: while `backlog` or more messages wait for a
 * delivery worker, a new transaction is held at MAIL FROM until the backlog falls below that or
 * `maxHoldMs` has passed, whichever comes first. The client waits with its message still in hand, so a held
 * transaction costs Postern a timer, not memory; and it always proceeds in the end: in-flow
 * control slows clients down to the delivery rate, it never refuses mail.
 */
export interface InflowControl {
  /** Resolves at once while the backlog is below the threshold; never rejects. */
  hold(): Promise<void>;
  /** Stops polling and lets every held transaction go. */
  close(): void;
}

export interface InflowOptions {
  /** Queued messages at which transactions are held; 0 disables the control. */
  backlog: number;
  maxHoldMs: number;
  /** The projects' backlogs added up (`countQueuedMessages`): called once per poll, never per message. */
  queuedMessages: () => Promise<number>;
  metrics: Pick<SmtpMetrics, "inflowHeld" | "inflowHoldSeconds">;
  log: Logger;
}

/** Why a held transaction was let go: the `ended` label of the hold-time histogram. */
type Release = "backlog" | "delay" | "unavailable" | "shutdown";

interface Held {
  since: bigint;
  timer: NodeJS.Timeout;
  resolve: () => void;
}

/**
 * Often enough that a falling backlog releases held transactions within a fraction of the
 * default 1 s delay; one cheap Redis call (a sum over the projects with messages queued) per
 * process per interval.
 */
const pollIntervalMs = 150;

const proceed = Promise.resolve();

export function createInflowControl(options: InflowOptions): InflowControl {
  const { backlog, maxHoldMs, metrics, log } = options;
  if (backlog === 0) return { hold: () => proceed, close() {} };

  /** Queued messages at the last poll; undefined before the first answer and while Redis fails. */
  let queued: number | undefined;
  /**
   * Transactions let through since the last poll. Each is about to add a message the poll has not
   * seen, so they count towards the backlog: a poll that finds room for n more lets n held
   * transactions go, not all of them, and newcomers until the next poll share the same room.
   * Admission then follows the delivery rate instead of swinging between all and nothing.
   */
  let admitted = 0;
  let polling = false;
  let outage = false;
  let closed = false;
  /** Held transactions in arrival order (a Set iterates in insertion order), released oldest first. */
  const held = new Set<Held>();

  const overBacklog = () => !closed && queued !== undefined && queued + admitted >= backlog;

  const release = (entry: Held, why: Release) => {
    if (!held.delete(entry)) return;
    clearTimeout(entry.timer);
    if (why !== "shutdown") admitted++;
    metrics.inflowHoldSeconds.observe({ ended: why }, Number(process.hrtime.bigint() - entry.since) / 1e9);
    entry.resolve();
  };

  const releaseWhileRoom = (why: Release) => {
    for (const entry of held) {
      if (overBacklog()) return;
      release(entry, why);
    }
  };

  const poll = () => {
    // One call in flight at most: a slow Redis does not pile up polls (its command timeout,
    // 2 s on the SMTP role's connection, ends a call that hangs).
    if (polling) return;
    polling = true;
    options
      .queuedMessages()
      .then(
        (count) => {
          if (outage) log.info({ queued: count }, "in-flow control: delivery queue depth readable again");
          outage = false;
          queued = count;
          admitted = 0;
          releaseWhileRoom("backlog");
        },
        (error: Error) => {
          // Without the depth there is nothing to hold for, and the transaction will meet the
          // same Redis at RCPT (451 4.3.0) anyway.
          if (!outage)
            log.warn({ err: error }, "in-flow control: delivery queue depth unreadable, not holding");
          outage = true;
          queued = undefined;
          releaseWhileRoom("unavailable");
        },
      )
      .finally(() => {
        polling = false;
      });
  };

  poll();
  const interval = setInterval(poll, pollIntervalMs);
  interval.unref();

  return {
    hold() {
      // Nobody is held unless the backlog is over: each poll releases the oldest held first,
      // while there is room, so a newcomer never overtakes a transaction already waiting.
      if (!overBacklog()) {
        admitted++;
        return proceed;
      }
      metrics.inflowHeld.inc();
      return new Promise<void>((resolve) => {
        const entry: Held = {
          since: process.hrtime.bigint(),
          timer: setTimeout(() => release(entry, "delay"), maxHoldMs),
          resolve,
        };
        held.add(entry);
      });
    },
    close() {
      closed = true;
      clearInterval(interval);
      for (const entry of held) release(entry, "shutdown");
    },
  };
}
