import type { Redis } from "@postern/queue/redis";
import { type Ok, ok, type Refusal, refuse } from "@postern/result";
import { RateLimiterRedis } from "rate-limiter-flexible";

/** What a quota needs to know about a project. */
export interface QuotaProject {
  id: string;
  quotaPerMinute: number;
  quotaDaily: number;
}

export type QuotaWindow = "perMinute" | "daily";

export type QuotaReservation =
  | Ok<undefined>
  | Refusal<"exceeded", { window: QuotaWindow; limit: number; msBeforeNext: number }>
  /** Redis did not answer: the caller must refuse (451 4.3.0), never accept unchecked. */
  | Refusal<"unavailable", { error: Error }>;

export interface WindowUsage {
  used: number;
  limit: number;
  /** When the current window ends; null when nothing was counted in it. */
  resetsAt: Date | null;
}

export interface QuotaUsage {
  perMinute: WindowUsage;
  daily: WindowUsage;
}

export interface ProjectQuota {
  /** Counts `recipients` against both windows, or counts nothing and says why not. */
  reserve(project: QuotaProject, recipients: number): Promise<QuotaReservation>;
  /** Gives back what `reserve` counted, when the transaction did not end in 250. */
  refund(project: QuotaProject, recipients: number): Promise<void>;
  usage(project: QuotaProject): Promise<QuotaUsage>;
  /** Gives back the recipients counted ahead and not used (best effort); at shutdown. */
  close(): Promise<void>;
}

export interface ProjectQuotaOptions {
  /** How far ahead a busy project is counted: its recipients of this many ms (0: never ahead). */
  aheadMs?: number;
  /** A process is idle for a project after this long without a reservation: its credit goes back. */
  idleMs?: number;
}

const windowSeconds: Record<QuotaWindow, number> = { perMinute: 60, daily: 86_400 };
const windows: QuotaWindow[] = ["perMinute", "daily"];

/**
 * Credit is spent only until this long before its window ends (as this process reckons the end:
 * from before it asked, so never late), and given back only until `returnMarginMs` before it:
 * a give-back that reached Redis after the window had ended would open the next one below zero.
 */
const spendMarginMs = 2_000;
const returnMarginMs = 1_000;
/** No project is counted ahead by more than this share of its smallest limit, per process. */
const aheadShareOfLimit = 1 / 20;

interface Pending {
  recipients: number;
  resolve: (reservation: QuotaReservation) => void;
}

/** Recipients of one project counted in Redis by this process and not yet reserved by a session. */
interface Credit {
  points: number;
  /** The limits it was counted under: a changed quota gives it back. */
  limits: Record<QuotaWindow, number>;
  /** Local time each window ends at the latest, as Redis said when the credit was counted. */
  endsAt: Record<QuotaWindow, number>;
}

interface ProjectState {
  project: QuotaProject;
  credit: Credit | undefined;
  /** Reservations waiting for a count in Redis, in the order they were made. */
  waiting: Pending[];
  counting: boolean;
  lastReservedAt: number;
  /** Recipients asked for in the current and the previous slot of `aheadMs` (the previous one is the demand). */
  slot: number;
  inSlot: number;
  inPreviousSlot: number;
}

/**
 * Per-project sending quotas, counted per recipient (as SES counts), on Redis with
 * rate-limiter-flexible fixed windows: the minute window starts at the first recipient counted and
 * lasts 60 s, the daily one lasts 24 h from its first recipient (a rolling day, not midnight UTC).
 * Every process shares the counters, so the limit holds across SMTP nodes. How fast a dead Redis
 * turns into "unavailable" is the connection's business: the SMTP role passes one with a command
 * timeout and a bounded retry count.
 *
 * A round trip to Redis at every RCPT is a wait on two busy processes in each message's session
 * (answering without it raised the benchmark's fresh-connection rate by a sixth or more:
 * docs/benchmarks-history.md, Sixteenth round). So a busy
 * project is counted ahead: when this process counts a project's recipients, it also counts up to
 * `aheadMs` of the project's demand (its recipients of the last full slot), at most a twentieth
 * of its smallest limit, and keeps them as credit. A reservation that credit covers is answered
 * without a round trip, and when less than half the demand is left the next count starts in the
 * background. A project asking for fewer than two recipients a slot is never counted ahead: each
 * of its reservations is counted as it comes, the reservations of one turn of the event loop
 * together. Credit is given back to Redis once the project has been idle here for `idleMs`,
 * before its window ends, when its limits change, and at `close`; it is never spent in a later
 * window than the one that counted it. What it costs: a project's usage reads up to that credit
 * high while it is busy, and near its limit another process may be refused what this one holds,
 * until it is given back. A process killed with credit loses it (counted, never sent): at most a
 * twentieth of a limit per process, until the window ends.
 */
export function createProjectQuota(
  redis: Redis,
  keyPrefix: string,
  options: ProjectQuotaOptions = {},
): ProjectQuota {
  const aheadMs = options.aheadMs ?? 100;
  const idleMs = options.idleMs ?? 1_000;
  // rate-limiter-flexible fixes the limit per limiter instance while each project has its own;
  // the counter lives under the project id whatever the limit, so one instance per distinct limit
  // reads and writes the same key (a changed quota applies to the running window at once).
  const limiters = new Map<string, RateLimiterRedis>();
  const limiter = (window: QuotaWindow, points: number): RateLimiterRedis => {
    const id = `${window}:${points}`;
    let found = limiters.get(id);
    if (!found) {
      found = new RateLimiterRedis({
        storeClient: redis,
        keyPrefix: `${keyPrefix}:quota:${window}`,
        points,
        duration: windowSeconds[window],
      });
      limiters.set(id, found);
    }
    return found;
  };
  const limits = (project: QuotaProject): Record<QuotaWindow, number> => ({
    perMinute: project.quotaPerMinute,
    daily: project.quotaDaily,
  });
  const sameLimits = (a: Record<QuotaWindow, number>, b: Record<QuotaWindow, number>) =>
    windows.every((w) => a[w] === b[w]);

  const giveBack = async (
    projectId: string,
    projectLimits: Record<QuotaWindow, number>,
    recipients: number,
    into: QuotaWindow[] = windows,
  ) => {
    await Promise.all(into.map((w) => limiter(w, projectLimits[w]).reward(projectId, recipients)));
  };

  const states = new Map<string, ProjectState>();
  const stateOf = (project: QuotaProject): ProjectState => {
    let state = states.get(project.id);
    if (!state) {
      state = {
        project,
        credit: undefined,
        waiting: [],
        counting: false,
        lastReservedAt: 0,
        slot: 0,
        inSlot: 0,
        inPreviousSlot: 0,
      };
      states.set(project.id, state);
      sweeper ??= setInterval(sweep, Math.min(idleMs, spendMarginMs - returnMarginMs) / 2).unref();
    }
    state.project = project;
    return state;
  };

  const spendable = (credit: Credit, now: number) =>
    windows.every((w) => now < credit.endsAt[w] - spendMarginMs);

  /** Gives the state's credit back to every window it can still go back to, and forgets it. */
  const returnCredit = (state: ProjectState, now: number): Promise<void> => {
    const credit = state.credit;
    state.credit = undefined;
    if (!credit || credit.points === 0) return Promise.resolve();
    const into = windows.filter((w) => now < credit.endsAt[w] - returnMarginMs);
    if (into.length === 0) return Promise.resolve();
    // Lost, it only leaves a few recipients counted that were not sent, until the window ends.
    return giveBack(state.project.id, credit.limits, credit.points, into).catch(() => {});
  };

  // Gives back the credit of projects gone idle here or whose window is ending, and forgets
  // projects with nothing left to do; it runs only while some project is remembered.
  let sweeper: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = Date.now();
    for (const [id, state] of states) {
      const idle = now - state.lastReservedAt >= idleMs;
      if (state.credit && (idle || !spendable(state.credit, now))) void returnCredit(state, now);
      if (idle && !state.credit && !state.counting && state.waiting.length === 0) states.delete(id);
    }
    if (states.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };

  /** Moves the project's demand on to the slot `now` is in. */
  const rollSlots = (state: ProjectState, now: number) => {
    const slot = Math.floor(now / Math.max(aheadMs, 1));
    if (slot === state.slot) return;
    state.inPreviousSlot = slot === state.slot + 1 ? state.inSlot : 0;
    state.inSlot = 0;
    state.slot = slot;
  };

  const countDemand = (state: ProjectState, recipients: number, now: number) => {
    rollSlots(state, now);
    state.inSlot += recipients;
    state.lastReservedAt = now;
  };

  /**
   * The credit the project should hold here: its recipients of the last full slot, within its
   * share of its limits. A burst alone (one message to many recipients) is no demand yet.
   */
  const creditWanted = (state: ProjectState): number => {
    if (aheadMs <= 0) return 0;
    rollSlots(state, Date.now());
    const demand = state.inPreviousSlot;
    if (demand < 2) return 0;
    const smallestLimit = Math.min(...windows.map((w) => limits(state.project)[w]));
    return Math.min(demand, Math.floor(smallestLimit * aheadShareOfLimit));
  };

  /** Answers waiting reservations from credit, in order, as far as it goes. */
  const serveFromCredit = (state: ProjectState) => {
    const credit = state.credit;
    if (!credit || !spendable(credit, Date.now())) return;
    while (state.waiting.length > 0) {
      const next = state.waiting[0] as Pending;
      if (next.recipients > credit.points) break;
      credit.points -= next.recipients;
      state.waiting.shift();
      next.resolve(ok(undefined));
    }
  };

  /**
   * One count in Redis for the project: every waiting reservation plus the credit it lacks, both
   * windows in one pipelined round trip. The reservations are judged in order as if each had been
   * made alone (a refused one counts nothing); what neither they nor the credit use is given back.
   */
  const count = async (state: ProjectState) => {
    state.counting = true;
    const group = state.waiting.splice(0);
    const project = state.project;
    const projectLimits = limits(project);
    const asked = group.reduce((sum, r) => sum + r.recipients, 0);
    const ahead = Math.max(0, creditWanted(state) - (state.credit?.points ?? 0));
    const total = asked + ahead;
    if (total === 0) {
      state.counting = false;
      return;
    }
    const unavailable = (error: unknown): QuotaReservation =>
      refuse("unavailable", { error: error as Error });
    const sentAt = Date.now();
    let outcomes: QuotaReservation[] = [];
    let kept = 0;
    let endsAt: Record<QuotaWindow, number> | undefined;
    try {
      // penalty() counts without refusing.
      const counted = await Promise.all(
        windows.map((w) => limiter(w, projectLimits[w]).penalty(project.id, total)),
      );
      const before = counted.map((res) => res.consumedPoints - total);
      const room = Math.min(...windows.map((w, i) => projectLimits[w] - (before[i] as number)));
      let accepted = 0;
      outcomes = group.map(({ recipients }) => {
        if (accepted + recipients <= room) {
          accepted += recipients;
          return ok(undefined);
        }
        const over = windows.findIndex(
          (w, i) => (before[i] as number) + accepted + recipients > projectLimits[w],
        );
        const window = windows[over] as QuotaWindow;
        return refuse("exceeded", {
          window,
          limit: projectLimits[window],
          msBeforeNext: counted[over]?.msBeforeNext ?? windowSeconds[window] * 1000,
        });
      });
      kept = Math.max(0, Math.min(ahead, room - accepted));
      const ends = windows.map((w, i) => sentAt + (counted[i]?.msBeforeNext ?? windowSeconds[w] * 1000));
      endsAt = { perMinute: ends[0] as number, daily: ends[1] as number };
      const unused = total - accepted - kept;
      if (unused > 0) {
        // A refusal whose recipients stay counted would hold quota it never used: say Redis failed.
        await giveBack(project.id, projectLimits, unused).catch((error: unknown) => {
          outcomes = outcomes.map((o) => (o.ok ? o : unavailable(error)));
        });
      }
    } catch (error) {
      outcomes = group.map(() => unavailable(error));
    }
    if (kept > 0 && endsAt) {
      const credit = state.credit;
      if (credit && sameLimits(credit.limits, projectLimits) && spendable(credit, Date.now())) {
        credit.points += kept;
        for (const w of windows) credit.endsAt[w] = Math.min(credit.endsAt[w], endsAt[w]);
      } else {
        void returnCredit(state, Date.now());
        state.credit = { points: kept, limits: projectLimits, endsAt };
      }
    }
    group.forEach((r, i) => {
      r.resolve(outcomes[i] as QuotaReservation);
    });
    state.counting = false;
    // Reservations made while this count was in Redis.
    serveFromCredit(state);
    if (state.waiting.length > 0) void count(state);
  };

  // Counts go out in the check phase of the turn, so that the RCPTs of all the sessions read in
  // one turn cost one count per project instead of one each (in the benchmark's pooled load, a
  // count per recipient was a tenth of the SMTP thread's busy time: docs/benchmarks-history.md,
  // Fourteenth round). Nothing waits for a timer.
  let due = new Set<ProjectState>();
  const countDue = () => {
    const states = due;
    due = new Set();
    for (const state of states) if (!state.counting) void count(state);
  };
  const countSoon = (state: ProjectState) => {
    if (due.size === 0) setImmediate(countDue);
    due.add(state);
  };

  return {
    reserve(project, recipients) {
      const now = Date.now();
      const state = stateOf(project);
      countDemand(state, recipients, now);
      const credit = state.credit;
      if (credit && (!sameLimits(credit.limits, limits(project)) || !spendable(credit, now)))
        void returnCredit(state, now);
      if (state.credit && state.waiting.length === 0 && state.credit.points >= recipients) {
        state.credit.points -= recipients;
        if (!state.counting && state.credit.points < creditWanted(state) / 2) countSoon(state);
        return Promise.resolve(ok(undefined));
      }
      return new Promise<QuotaReservation>((resolve) => {
        state.waiting.push({ recipients, resolve });
        if (!state.counting) countSoon(state);
      });
    },
    refund: (project, recipients) => giveBack(project.id, limits(project), recipients),
    async usage(project) {
      const [perMinute, daily] = await Promise.all(
        windows.map(async (w): Promise<WindowUsage> => {
          const res = await limiter(w, limits(project)[w]).get(project.id);
          return {
            used: res?.consumedPoints ?? 0,
            limit: limits(project)[w],
            resetsAt: res ? new Date(Date.now() + res.msBeforeNext) : null,
          };
        }),
      );
      return { perMinute: perMinute as WindowUsage, daily: daily as WindowUsage };
    },
    async close() {
      clearInterval(sweeper);
      sweeper = undefined;
      const now = Date.now();
      await Promise.all([...states.values()].map((state) => returnCredit(state, now)));
    },
  };
}
