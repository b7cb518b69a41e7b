/**
 * A circuit breaker per upstream (host:port), per process: an upstream that keeps failing to take a
 * connection (refused, reset, no TCP within the connect timeout, no greeting within the greeting
 * timeout, a 4xx/5xx greeting, a failed TLS handshake) is backed off as a whole instead of being
 * tried by every delivery, as Postfix's queue manager marks a destination dead ("delivery
 * temporarily suspended").
 *
 * - closed: deliveries connect; `failureThreshold` failures to connect in a row open it.
 * - open: no delivery connects for `cooldownMs`; each is deferred with the reason (`Suspended`).
 * - after the cool-down, one delivery goes through as a probe while the others wait (`Probing`);
 *   the upstream answering closes the circuit, a failure opens it for another cool-down.
 *
 * An AUTH refusal is not counted: the upstream answered, the stored password is wrong.
 */
export type Admission =
  | { kind: "allowed"; probe: boolean }
  | { kind: "suspended"; reason: string; until: number }
  | { kind: "probing"; probeEndsBy: number };

interface CircuitState {
  failures: number;
  lastError: string;
  /** Set while open: no delivery connects before this time. */
  openUntil: number | undefined;
  /** Set while a probe is in flight: when it started. */
  probeStartedAt: number | undefined;
}

export interface UpstreamCircuitsOptions {
  failureThreshold: number;
  cooldownMs: number;
  /** The longest a probe can take to connect (the connect timeout). */
  probeTimeoutMs: number;
  now?: () => number;
}

export class UpstreamCircuits {
  private readonly states = new Map<string, CircuitState>();
  private readonly now: () => number;

  constructor(private readonly options: UpstreamCircuitsOptions) {
    this.now = options.now ?? Date.now;
  }

  /** May a delivery to `upstream` go ahead now? */
  admit(upstream: string): Admission {
    const state = this.states.get(upstream);
    if (!state || state.openUntil === undefined) return { kind: "allowed", probe: false };
    const now = this.now();
    if (state.probeStartedAt !== undefined)
      return { kind: "probing", probeEndsBy: state.probeStartedAt + this.options.probeTimeoutMs };
    if (now < state.openUntil) {
      const reason =
        `delivery temporarily suspended: ${upstream} failed to take a connection ${state.failures} times in a row ` +
        `(last: ${state.lastError}); it is tried again after ${new Date(state.openUntil).toISOString()}`;
      return { kind: "suspended", reason, until: state.openUntil };
    }
    state.probeStartedAt = now;
    return { kind: "allowed", probe: true };
  }

  /** A connection to `upstream` was greeted (and TLS, if any, set up). */
  connected(upstream: string): void {
    this.states.delete(upstream);
  }

  /** A connection to `upstream` failed before the upstream was ready for a message. */
  connectFailed(upstream: string, error: string): void {
    const state = this.states.get(upstream) ?? {
      failures: 0,
      lastError: error,
      openUntil: undefined,
      probeStartedAt: undefined,
    };
    state.failures += 1;
    state.lastError = error;
    const probeFailed = state.probeStartedAt !== undefined;
    if (probeFailed || state.failures >= this.options.failureThreshold) {
      state.openUntil = this.now() + this.options.cooldownMs;
      state.probeStartedAt = undefined;
    }
    this.states.set(upstream, state);
  }

  /**
   * The probe's delivery ended. If it never reported a connection (a kept connection carried it),
   * its outcome decides: answered closes, not answered reopens; `undefined` (it never got as far
   * as the upstream) lets the next delivery probe instead.
   */
  probeEnded(upstream: string, answered: boolean | undefined): void {
    const state = this.states.get(upstream);
    if (state?.probeStartedAt === undefined) return;
    if (answered === undefined) state.probeStartedAt = undefined;
    else if (answered) this.states.delete(upstream);
    else this.connectFailed(upstream, state.lastError);
  }

  /** Upstreams currently open or probing (the metric). */
  suspendedCount(): number {
    let count = 0;
    for (const state of this.states.values()) if (state.openUntil !== undefined) count += 1;
    return count;
  }
}
