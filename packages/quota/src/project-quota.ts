import type { Redis } from "ioredis";
import { RateLimiterRedis, type RateLimiterRes } from "rate-limiter-flexible";

/** What a quota needs to know about a project. */
export interface QuotaProject {
  id: string;
  quotaPerMinute: number;
  quotaDaily: number;
}

export type QuotaWindow = "perMinute" | "daily";

export type QuotaReservation =
  | { ok: true }
  | { ok: false; reason: "exceeded"; window: QuotaWindow; limit: number; msBeforeNext: number }
  /** Redis did not answer: the caller must refuse (451 4.3.0), never accept unchecked. */
  | { ok: false; reason: "unavailable"; error: Error };

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
}

const windowSeconds: Record<QuotaWindow, number> = { perMinute: 60, daily: 86_400 };

interface Pending {
  project: QuotaProject;
  recipients: number;
  resolve: (reservation: QuotaReservation) => void;
}

/**
 * Per-project sending quotas, counted per recipient (as SES counts), on Redis with
 * rate-limiter-flexible fixed windows: the minute window starts at the first recipient counted and
 * lasts 60 s, the daily one lasts 24 h from its first recipient (a rolling day, not midnight UTC).
 * Every process shares the counters, so the limit holds across SMTP nodes. How fast a dead Redis
 * turns into "unavailable" is the connection's business: the SMTP role passes one with a command
 * timeout and a bounded retry count.
 */
export function createProjectQuota(redis: Redis, keyPrefix: string): ProjectQuota {
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
  const windows: QuotaWindow[] = ["perMinute", "daily"];

  const refund = async (project: QuotaProject, recipients: number) => {
    await Promise.all(windows.map((w) => limiter(w, limits(project)[w]).reward(project.id, recipients)));
  };

  /**
   * Judges a project's reservations of one turn of the event loop as if each were made alone, in
   * order: one counted on top of those accepted before it must stay within every window, and
   * refused ones count nothing. `counted` is each window's count once all `total` recipients of
   * the group were added.
   */
  const judge = (group: Pending[], total: number, counted: RateLimiterRes[]): QuotaReservation[] => {
    let accepted = 0;
    return group.map(({ project, recipients }) => {
      const over = windows.findIndex(
        (w, i) => (counted[i]?.consumedPoints ?? 0) - total + accepted + recipients > limits(project)[w],
      );
      if (over < 0) {
        accepted += recipients;
        return { ok: true };
      }
      const window = windows[over] as QuotaWindow;
      return {
        ok: false,
        reason: "exceeded",
        window,
        limit: limits(project)[window],
        msBeforeNext: counted[over]?.msBeforeNext ?? windowSeconds[window] * 1000,
      };
    });
  };

  const settle = async (group: Pending[]) => {
    const first = (group[0] as Pending).project;
    const total = group.reduce((sum, r) => sum + r.recipients, 0);
    const unavailable = (error: unknown): QuotaReservation => ({
      ok: false,
      reason: "unavailable",
      error: error as Error,
    });
    let outcomes: QuotaReservation[];
    try {
      // penalty() counts without refusing, both windows in one pipelined round trip.
      const counted = await Promise.all(
        windows.map((w) => limiter(w, limits(first)[w]).penalty(first.id, total)),
      );
      outcomes = judge(group, total, counted);
    } catch (error) {
      outcomes = group.map(() => unavailable(error));
    }
    const exceeded = (o: QuotaReservation | undefined) => o?.ok === false && o.reason === "exceeded";
    const refused = group.reduce((sum, r, i) => (exceeded(outcomes[i]) ? sum + r.recipients : sum), 0);
    if (refused > 0) {
      // A refusal whose recipients stay counted would hold quota it never used: say Redis failed.
      await refund(first, refused).catch((error: unknown) => {
        outcomes = outcomes.map((o) => (o.ok ? o : unavailable(error)));
      });
    }
    group.forEach((r, i) => {
      r.resolve(outcomes[i] as QuotaReservation);
    });
  };

  // Reservations are counted per project and per turn of the event loop: the RCPTs of all the
  // sessions read in one turn cost one pair of script calls per project instead of a pair each
  // (in the benchmark's pooled load, the two calls per recipient were a tenth of the SMTP
  // thread's busy time). Nothing waits for a timer: the turn's reservations go in its check phase.
  let pending = new Map<string, Pending[]>();
  const flush = () => {
    const groups = pending;
    pending = new Map();
    for (const group of groups.values()) void settle(group);
  };

  return {
    reserve(project, recipients) {
      return new Promise<QuotaReservation>((resolve) => {
        if (pending.size === 0) setImmediate(flush);
        const group = pending.get(project.id);
        const reservation = { project, recipients, resolve };
        if (group) group.push(reservation);
        else pending.set(project.id, [reservation]);
      });
    },
    refund,
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
  };
}
