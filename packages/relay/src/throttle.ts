import { randomUUID } from "node:crypto";
import { keyFamily, type Redis } from "@postern/queue/redis";

/**
 * Per-destination throttling (docs/routing.md, Throttling): how many deliveries may be in flight to
 * one destination at once and how many may start per minute, across every project and every worker
 * process, with the concurrency lowered when the destination pushes back and raised back as it
 * accepts again.
 *
 * A destination is a recipient domain for direct delivery, and an upstream's `host:port` for an
 * upstream URL. Its caps are DESTINATION_CONCURRENCY and DESTINATION_RATE_PER_MINUTE, or a route's
 * `limits`; 0 is no cap. The state lives in Redis, so the caps hold however many workers run (the
 * keys are one key family, `keyFamily`, since the scripts take the limits hash with a
 * destination's keys: one slot on a Redis Cluster):
 *
 * - `…:throttle:limits`, a hash: destination → `limit:successes:loweredAt:updatedAt` for each
 *   destination whose concurrency is lowered (AIMD, below). Absent: the destination's cap applies.
 * - `…:throttle:leases:<destination>`, a sorted set: one member per delivery in flight, scored by
 *   when its lease expires (`leaseTtlMs`), so the slots of a worker that died come back by themselves.
 * - `…:throttle:starts:<destination>`, a sorted set: the deliveries started in the last minute.
 * - `…:throttle:refused:<destination>`, a counter of the deliveries refused at its concurrency in
 *   the last 10 s: how far apart they are sent back (see `admit`).
 *
 * AIMD, as TCP's congestion control: a `421` or a `4.7.x` reply halves the destination's limit
 * (from its cap, or from `ceiling` when it has none), with a floor of 1; a reply to a delivery that
 * started before the last halving does not halve it again (it was sent under the old limit). Each
 * delivery accepted while lowered counts one success, and `limit` successes raise the limit by one;
 * back at the cap, the destination is no longer lowered. A destination without deliveries for
 * `forgetAfterMs` is forgotten (its limit back to its cap).
 *
 * A destination with no cap that is not lowered costs no Redis round trip: this process keeps a
 * copy of the lowered destinations, read again every `refreshMs`.
 */

export interface DestinationLimits {
  /** Deliveries in flight at once; 0: no cap. */
  concurrency: number;
  /** Deliveries started per minute; 0: no cap. */
  ratePerMinute: number;
}

/** A delivery admitted to its destination: settle it once it has its answer. */
export interface DestinationLease {
  destination: string;
  /** The concurrency cap it was admitted under (0: none): where the AIMD limit starts and ends. */
  cap: number;
  startedAt: number;
  /** Undefined: admitted without Redis (no cap, not lowered), nothing to give back. */
  id: string | undefined;
}

export type DestinationAdmission =
  | { kind: "admitted"; lease: DestinationLease }
  | {
      kind: "throttled";
      reason: "destination_busy" | "destination_rate";
      /**
       * When to try again: when the oldest start's minute ends (rate), or (concurrency) a second per
       * limit's worth of deliveries refused in the last 10 s, 2 to 30 s.
       */
      retryInMs: number;
      /** The limit that refused it (concurrency limit, or deliveries per minute). */
      limit: number;
    };

/** What the destination's answer says about its load. */
export type DestinationSignal = "pushed_back" | "accepted" | "neutral";

export interface DestinationThrottleOptions {
  /** Where the limit of a destination without a concurrency cap starts halving from. */
  ceiling: number;
  /** A lease not given back within this is dropped (its worker died). */
  leaseTtlMs?: number;
  refreshMs?: number;
  forgetAfterMs?: number;
  now?: () => number;
}

/** Refusals of a destination at its concurrency are counted over this window (see `admit`). */
const refusalWindowMs = 10_000;

const admitScript = `
local now = tonumber(ARGV[4])
local cap = tonumber(ARGV[2])
local limit = cap
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state then
  local lowered = tonumber(string.match(state, '^(%d+)'))
  if limit == 0 or lowered < limit then limit = lowered end
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= limit then
    local refused = redis.call('INCR', KEYS[4])
    if refused == 1 then redis.call('PEXPIRE', KEYS[4], ${refusalWindowMs}) end
    return {0, limit, -refused}
  end
end
local rate = tonumber(ARGV[3])
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[3]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, rate, tonumber(oldest[2]) + 60000 - now}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], 60000)
end
if limit > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return {1, limit, 0}`;

/**
 * Gives a lease back (KEYS[2], ARGV[2]; empty: none) and applies the signal ARGV[3] to the
 * destination's limit. ARGV[4]: the cap (or the ceiling); ARGV[5]: when the delivery started.
 * Returns the limit after it, 0 when the destination is not lowered.
 */
const settleScript = `
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
local cap = tonumber(ARGV[4])
local now = ARGV[6]
local state = redis.call('HGET', KEYS[1], ARGV[1])
local limit, successes, loweredAt = cap, 0, 0
if state then
  local l, s, at = string.match(state, '^(%d+):(%d+):(%d+)')
  limit, successes, loweredAt = math.min(tonumber(l), cap), tonumber(s), tonumber(at)
end
if ARGV[3] == 'pushed_back' then
  if state and tonumber(ARGV[5]) < loweredAt then return limit end
  limit = math.max(1, math.floor(limit / 2))
  redis.call('HSET', KEYS[1], ARGV[1], limit .. ':0:' .. now .. ':' .. now)
  return limit
end
if not state then return 0 end
if ARGV[3] == 'accepted' then
  successes = successes + 1
  if successes >= limit then limit, successes = limit + 1, 0 end
  if limit >= cap then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], limit .. ':' .. successes .. ':' .. loweredAt .. ':' .. now)
return limit`;

/** Drops lowered destinations nobody delivered to for ARGV[1] ms; returns what is left. */
const snapshotScript = `
local kept = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local updatedAt = tonumber(string.match(fields[i + 1], ':(%d+)$'))
  if updatedAt < tonumber(ARGV[1]) then redis.call('HDEL', KEYS[1], fields[i])
  else table.insert(kept, fields[i]); table.insert(kept, fields[i + 1]) end
end
return kept`;

const scripts = {
  posternThrottleAdmit: { numberOfKeys: 4, lua: admitScript },
  posternThrottleSettle: { numberOfKeys: 2, lua: settleScript },
  posternThrottleSnapshot: { numberOfKeys: 1, lua: snapshotScript },
};

type ThrottleRedis = Redis & Record<keyof typeof scripts, (...keysAndArgs: string[]) => Promise<unknown>>;

export class DestinationThrottle {
  private readonly redis: ThrottleRedis;
  /** Where every key of the throttle starts. */
  private readonly keys: string;
  private readonly limitsKey: string;
  /** Lowered destinations → their limit, as last read or changed by this process. */
  private lowered = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly leaseTtlMs: number;
  private readonly forgetAfterMs: number;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly options: DestinationThrottleOptions,
  ) {
    if (!("posternThrottleAdmit" in redis))
      for (const [name, definition] of Object.entries(scripts)) redis.defineCommand(name, definition);
    this.redis = redis as ThrottleRedis;
    this.keys = keyFamily(redis, prefix, "throttle");
    this.limitsKey = `${this.keys}:limits`;
    this.now = options.now ?? Date.now;
    this.leaseTtlMs = options.leaseTtlMs ?? 300_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 600_000;
    this.timer = setInterval(() => void this.refresh().catch(() => {}), options.refreshMs ?? 1_000);
    this.timer.unref();
  }

  /** May a delivery to `destination` start now? Admitted: settle the lease when it has its answer. */
  async admit(destination: string, limits: DestinationLimits): Promise<DestinationAdmission> {
    const startedAt = this.now();
    const cap = limits.concurrency;
    if (cap === 0 && limits.ratePerMinute === 0 && !this.lowered.has(destination))
      return { kind: "admitted", lease: { destination, cap, startedAt, id: undefined } };
    const id = randomUUID();
    const [admitted, limit, retryInMs] = (await this.redis.posternThrottleAdmit(
      this.limitsKey,
      this.leasesKey(destination),
      `${this.keys}:starts:${destination}`,
      `${this.keys}:refused:${destination}`,
      destination,
      String(cap),
      String(limits.ratePerMinute),
      String(startedAt),
      id,
      String(this.leaseTtlMs),
    )) as [number, number, number];
    if (admitted === 1) return { kind: "admitted", lease: { destination, cap, startedAt, id } };
    if (retryInMs > 0) return { kind: "throttled", reason: "destination_rate", retryInMs, limit };
    // The deliveries refused lately, `-retryInMs`, are about those waiting for the destination: they
    // come back spread over the time its slots take to serve them (a second per limit's worth, 2 to
    // 30 s), not every one of them every two seconds.
    const waiting = -retryInMs;
    const spreadMs = Math.min(Math.max(Math.ceil(waiting / limit) * 1_000, 2_000), 30_000);
    return { kind: "throttled", reason: "destination_busy", retryInMs: spreadMs, limit };
  }

  /**
   * Gives the lease back and lets the answer move the destination's limit. Costs nothing for a
   * lease taken without Redis whose answer was not a push-back.
   */
  async settle(lease: DestinationLease, signal: DestinationSignal): Promise<void> {
    const tracked = this.lowered.has(lease.destination);
    if (lease.id === undefined && !tracked && signal !== "pushed_back") return;
    const limit = (await this.redis.posternThrottleSettle(
      this.limitsKey,
      this.leasesKey(lease.destination),
      lease.destination,
      lease.id ?? "",
      signal,
      String(lease.cap > 0 ? lease.cap : this.options.ceiling),
      String(lease.startedAt),
      String(this.now()),
    )) as number;
    if (limit > 0) this.lowered.set(lease.destination, limit);
    else this.lowered.delete(lease.destination);
  }

  /** Destinations whose concurrency is lowered now, with their limit (all workers' view, from Redis). */
  async loweredLimits(): Promise<Map<string, number>> {
    await this.refresh();
    return new Map(this.lowered);
  }

  close(): void {
    clearInterval(this.timer);
  }

  private async refresh(): Promise<void> {
    const fields = (await this.redis.posternThrottleSnapshot(
      this.limitsKey,
      String(this.now() - this.forgetAfterMs),
    )) as string[];
    const lowered = new Map<string, number>();
    for (let i = 0; i < fields.length; i += 2)
      lowered.set(fields[i] as string, Number.parseInt(fields[i + 1] as string, 10));
    this.lowered = lowered;
  }

  private leasesKey(destination: string): string {
    return `${this.keys}:leases:${destination}`;
  }
}

/**
 * A destination pushing back on our load (RFC 3463 X.7.x is "security or policy", which is where
 * providers put their rate limits: Gmail's `421 4.7.28`, Microsoft's `451 4.7.500`), or a `421`
 * (the server closing the session: too many connections, try later).
 */
export function signalOf(verdicts: { outcome: string; code: number | null; enhancedCode: string | null }[]) {
  if (
    verdicts.some((v) => v.code === 421 || (v.outcome === "deferred" && v.enhancedCode?.startsWith("4.7.")))
  )
    return "pushed_back" as const;
  if (verdicts.some((v) => v.outcome === "delivered")) return "accepted" as const;
  return "neutral" as const;
}
