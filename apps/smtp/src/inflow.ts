import type { Logger } from "@postern/telemetry";
import type { SmtpMetrics } from "./metrics";

/**
 * In-flow control, like Postfix's `in_flow_delay` but per project: while `backlog` or more
 * messages of a project wait for a delivery worker, a new transaction of that project is held at
 * MAIL FROM until its backlog falls below that or `maxHoldMs` has passed, whichever comes first.
 * Each project is held for its own backlog only: a project whose upstream is stuck, or that sent
 * a burst, slows its own clients down and no one else's. The client waits with its message still in hand, so a held transaction
 * costs Postern a timer, not memory; and it always proceeds in the end: in-flow control slows
 * clients down to their delivery rate, it never refuses mail.
 */
export interface InflowControl {
  /** Resolves at once while the project's backlog is below the threshold; never rejects. */
  hold(projectId: string): Promise<void>;
  /** Stops polling and lets every held transaction go. */
  close(): void;
}

export interface InflowOptions {
  /** Queued messages of a project at which its transactions are held; 0 disables the control. */
  backlog: number;
  maxHoldMs: number;
  /**
   * Each project's backlog (`countQueuedMessagesByProject`; a project missing has none): called
   * once per poll, never per message.
   */
  queuedMessages: () => Promise<ReadonlyMap<string, number>>;
  metrics: Pick<SmtpMetrics, "inflowHeld" | "inflowHoldSeconds">;
  log: Logger;
}

/** Why a held transaction was let go: the `ended` label of the hold-time histogram. */
type Release = "backlog" | "delay" | "unavailable" | "shutdown";

interface Held {
  projectId: string;
  since: bigint;
  timer: NodeJS.Timeout;
  resolve: () => void;
}

/**
 * Often enough that a falling backlog releases held transactions within a fraction of the
 * default 1 s delay; one cheap Redis call (a hash field per project with messages queued) per
 * process per interval.
 */
const pollIntervalMs = 150;

const proceed = Promise.resolve();

export function createInflowControl(options: InflowOptions): InflowControl {
  const { backlog, maxHoldMs, metrics, log } = options;
  if (backlog === 0) return { hold: () => proceed, close() {} };

  /**
   * Each project's queued messages at the last poll; undefined before the first answer and while
   * Redis fails.
   */
  let queued: ReadonlyMap<string, number> | undefined;
  /**
   * Each project's transactions let through since the last poll. Each is about to add a message
   * the poll has not seen, so they count towards its project's backlog: a poll that finds room for
   * n more of a project lets n of its held transactions go, not all of them, and its newcomers
   * until the next poll share the same room. Admission then follows the project's delivery rate
   * instead of swinging between all and nothing.
   */
  let admitted = new Map<string, number>();
  let polling = false;
  let outage = false;
  let closed = false;
  /** Held transactions in arrival order (a Set iterates in insertion order), released oldest first. */
  const held = new Set<Held>();

  const overBacklog = (projectId: string) =>
    !closed &&
    queued !== undefined &&
    (queued.get(projectId) ?? 0) + (admitted.get(projectId) ?? 0) >= backlog;

  const admit = (projectId: string) => admitted.set(projectId, (admitted.get(projectId) ?? 0) + 1);

  const release = (entry: Held, why: Release) => {
    if (!held.delete(entry)) return;
    clearTimeout(entry.timer);
    if (why !== "shutdown") admit(entry.projectId);
    metrics.inflowHoldSeconds.observe({ ended: why }, Number(process.hrtime.bigint() - entry.since) / 1e9);
    entry.resolve();
  };

  /** Lets held transactions go, oldest first, each while its project has room. */
  const releaseWhileRoom = (why: Release) => {
    for (const entry of held) if (!overBacklog(entry.projectId)) release(entry, why);
  };

  const poll = () => {
    // One call in flight at most: a slow Redis does not pile up polls (its command timeout,
    // 2 s on the SMTP role's connection, ends a call that hangs).
    if (polling) return;
    polling = true;
    options
      .queuedMessages()
      .then(
        (counts) => {
          if (outage) log.info("in-flow control: delivery queue depth readable again");
          outage = false;
          queued = counts;
          admitted = new Map();
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
    hold(projectId) {
      // Nobody of a project is held unless its backlog is over: each poll releases the project's
      // oldest held first, while it has room, so a newcomer never overtakes a transaction of its
      // project already waiting.
      if (!overBacklog(projectId)) {
        admit(projectId);
        return proceed;
      }
      metrics.inflowHeld.inc();
      return new Promise<void>((resolve) => {
        const entry: Held = {
          projectId,
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
