/**
 * Bounds the message bytes that the SMTP sessions of a process hold together, from DATA until
 * the message is stored (SMTP_DATA_MEMORY). A message is held whole in memory until its commit;
 * without a bound, 50 sessions each sending a 25 MiB message would hold 1.25 GB. A session that
 * would go over the bound stops reading its DATA until stored messages free their bytes: the
 * stream it reads from stops, smtp-server stops reading the socket, and TCP's window makes the
 * client wait. Nothing is refused.
 *
 * The session that has held bytes longest always goes on, and its bytes are not counted against
 * the others: the bound is shared by every other session. Without the first part, sessions that
 * each hold part of a message could all wait for each other; this way one of them always finishes
 * and frees what it holds, and a message as large as MAX_MESSAGE_SIZE gets through whatever the
 * bound. Without the second, a large message from a slow client would stop every other session's
 * DATA for as long as it held the bound, though it only ever holds one message. What the process
 * holds is at most the bound plus that message.
 *
 * A session's first take asks for the size messages have had lately (a moving average of what the
 * sessions held, capped at the bound), and its later takes draw on that until it is spent. So the
 * bound admits as many messages as fit in it whole, rather than every session that reaches DATA:
 * with fifty sessions of 1 MiB messages and 16 MiB, each taking its chunks as they came, all fifty
 * held a part, none of them but the oldest could finish, and the messages were received about one
 * at a time (docs/benchmarks-history.md, Seventeenth round). Small messages make the average small
 * and the first take no larger than today's; a message larger than the average takes the rest as
 * before.
 */
export interface DataBudget {
  /** A holder for one message's bytes, to release once the message is stored or refused. */
  holder(): DataHolder;
  /** Bytes held now, the oldest session's included (metric). */
  held(): number;
}

export interface DataHolder {
  /** Resolves once `bytes` more may be held; at once when they fit. */
  take(bytes: number): Promise<void> | undefined;
  /** Frees everything this holder took, and lets waiting sessions go on. Idempotent. */
  release(): void;
}

interface Waiter {
  holder: DataHolder;
  bytes: number;
  resolve: () => void;
}

export function createDataBudget(limitBytes: number, options: { onWait?: () => void } = {}): DataBudget {
  let used = 0;
  /** Moving average of the bytes a holder took, over about the last 8 holders. */
  let typical = 0;
  // Insertion order is the order holders first took bytes: the first key is the oldest.
  const holding = new Map<DataHolder, number>();
  const waiters: Waiter[] = [];

  const oldest = (holder: DataHolder) => holding.keys().next().value === holder;
  const grant = (holder: DataHolder, bytes: number) => {
    used += bytes;
    holding.set(holder, (holding.get(holder) ?? 0) + bytes);
  };
  /** What the sessions other than the oldest hold: the bytes the bound applies to. */
  const usedByOthers = () => {
    const first = holding.values().next();
    return used - (first.done ? 0 : first.value);
  };
  // With nothing held, whoever takes becomes the oldest: a first take larger than the bound goes.
  const fits = (holder: DataHolder, bytes: number) =>
    holding.size === 0 || oldest(holder) || usedByOthers() + bytes <= limitBytes;

  const wake = () => {
    // The oldest holder first, wherever it waits; then the others in the order they came.
    const first = waiters.findIndex((w) => oldest(w.holder));
    if (first > 0) waiters.unshift(...waiters.splice(first, 1));
    while (waiters.length > 0) {
      const next = waiters[0] as Waiter;
      if (!fits(next.holder, next.bytes)) return;
      waiters.shift();
      grant(next.holder, next.bytes);
      next.resolve();
    }
  };

  return {
    holder() {
      let released = false;
      let taken = 0;
      /** Granted ahead of the takes (see above), not yet taken. */
      let ahead = 0;
      const holder: DataHolder = {
        take(wanted) {
          if (released) return undefined;
          const first = taken === 0;
          taken += wanted;
          if (wanted <= ahead) {
            ahead -= wanted;
            return undefined;
          }
          const bytes = first ? Math.max(wanted, Math.min(Math.round(typical), limitBytes)) : wanted - ahead;
          ahead = ahead + bytes - wanted;
          if ((waiters.length === 0 || oldest(holder)) && fits(holder, bytes)) {
            grant(holder, bytes);
            return undefined;
          }
          options.onWait?.();
          return new Promise((resolve) => waiters.push({ holder, bytes, resolve }));
        },
        release() {
          if (released) return;
          released = true;
          if (taken > 0) typical += (taken - typical) / 8;
          used -= holding.get(holder) ?? 0;
          holding.delete(holder);
          // A take still waiting when its holder is released is let go, not left in the queue.
          for (let i = waiters.length - 1; i >= 0; i--) {
            const waiter = waiters[i] as Waiter;
            if (waiter.holder === holder) {
              waiters.splice(i, 1);
              waiter.resolve();
            }
          }
          wake();
        },
      };
      return holder;
    },
    held: () => used,
  };
}
