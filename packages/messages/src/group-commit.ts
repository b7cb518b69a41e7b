import { refusedARow } from "./database-errors";

export interface GroupCommitOptions<Item> {
  /** Most items in one statement. */
  maxItems: number;
  /** Statements running at once; the next batch fills while they run (default 1). */
  maxInFlight?: number;
  /** Least time from the start of one statement to the start of the next, unless a batch is full (default 0). */
  spacingMs?: number;
  /** An item's size and the most a statement carries (a larger item goes alone). */
  bytes?: { of: (item: Item) => number; max: number };
  /** A batch never holds two items with the same key (default: no key). */
  keyOf?: (item: Item) => string;
  /**
   * Calls made in one tick wait for its end and go together (default). False: a call with
   * nothing running goes at once, alone.
   */
  gatherTick?: boolean;
  /** Longest a batch with nothing in flight waits for the items announced by `expect` (default 0). */
  maxHoldMs?: number;
  /** After each batch's callers have been answered (work that must not delay the answers). */
  afterAnswered?: () => void;
}

export interface GroupCommit<Item, Result> {
  /** Runs the item in the next statement; resolves with its result, rejects with the statement's error. */
  submit(item: Item): Promise<Result>;
  /** Announces an item on its way, so that a batch about to go with nothing in flight waits for it. */
  expect(): ExpectedItem<Item, Result>;
}

export interface ExpectedItem<Item, Result> {
  submit(item: Item): Promise<Result>;
  /** The item will not come; after `submit`, does nothing. */
  cancel(): void;
}

interface Waiting<Item, Result> {
  item: Item;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
}

type Settled<Result> = { ok: true; result: Result } | { ok: false; error: unknown };

/**
 * Group commit, the one primitive of the accept path and the delivery store: turns a statement
 * over many items (`run`: one result per item, in their order) into a call per item whose
 * concurrent calls share statements, so one round trip, one commit (one WAL flush) and one run
 * of the statement-level triggers on "Message" serve a batch.
 *
 * Up to `maxInFlight` statements run at once and the next batch fills while they do. A statement
 * starts at most every `spacingMs`, as PostgreSQL's `commit_delay` holds a commit for others to
 * join it, unless its batch is full. A batch that would go with nothing in flight waits, for at
 * most `maxHoldMs`, for the items announced by `expect` (being received elsewhere): a lone caller
 * is never held. A batch never holds the same key twice: a second call for a key already in it
 * waits for the next batch (so a record's guard decides between two runs of one message exactly
 * as when each had its own statement).
 *
 * A failed statement fails each of its callers, except when PostgreSQL refused something in the
 * batch itself (`refusedARow`, database-errors.ts): then each item is run alone, so one
 * poisoned row cannot fail its neighbours.
 */
export function createGroupCommit<Item, Result>(
  run: (items: Item[]) => Promise<Result[]>,
  options: GroupCommitOptions<Item>,
): GroupCommit<Item, Result> {
  const { maxItems, bytes, keyOf, afterAnswered } = options;
  const maxInFlight = options.maxInFlight ?? 1;
  const spacingMs = options.spacingMs ?? 0;
  const maxHoldMs = options.maxHoldMs ?? 0;
  const gatherTick = options.gatherTick ?? true;
  const sizeOf = bytes?.of ?? (() => 0);
  const maxBytes = bytes?.max ?? Number.POSITIVE_INFINITY;

  const waiting: Array<Waiting<Item, Result>> = [];
  let waitingBytes = 0;
  let inFlight = 0;
  /** Items announced by `expect` and not yet submitted. */
  let expected = 0;
  let flushScheduled = false;
  let lastStartedAt = Number.NEGATIVE_INFINITY;
  /** Set while a batch waits for the spacing since the last statement's start. */
  let spacingTimer: NodeJS.Timeout | undefined;
  let holdTimer: NodeJS.Timeout | undefined;
  let holdExpired = false;

  const takeBatch = (): Array<Waiting<Item, Result>> => {
    const batch: Array<Waiting<Item, Result>> = [];
    const keys = new Set<string>();
    const left: Array<Waiting<Item, Result>> = [];
    let size = 0;
    let closed = false;
    for (const next of waiting) {
      const key = keyOf?.(next.item);
      const itemBytes = sizeOf(next.item);
      if (batch.length > 0 && size + itemBytes > maxBytes) closed = true;
      if (!closed && batch.length < maxItems && (key === undefined || !keys.has(key))) {
        batch.push(next);
        size += itemBytes;
        if (key !== undefined) keys.add(key);
      } else {
        left.push(next);
      }
    }
    waiting.splice(0, waiting.length, ...left);
    waitingBytes -= size;
    return batch;
  };

  const settle = async (items: Item[]): Promise<Array<Settled<Result>>> => {
    try {
      const results = await run(items);
      return results.map((result) => ({ ok: true, result }));
    } catch (error) {
      if (items.length === 1 || !refusedARow(error)) return items.map(() => ({ ok: false, error }));
      const alone: Array<Settled<Result>> = [];
      for (const item of items) alone.push(...(await settle([item])));
      return alone;
    }
  };

  const runBatch = async (batch: Array<Waiting<Item, Result>>) => {
    const settled = await settle(batch.map((w) => w.item));
    // The connection is free for the next batch.
    inFlight--;
    runNext();
    batch.forEach((w, i) => {
      const outcome = settled[i];
      if (outcome?.ok) w.resolve(outcome.result);
      else w.reject(outcome?.error);
    });
    afterAnswered?.();
  };

  /** Nothing in flight, items on their way, and room for them in the batch. */
  const holding = () =>
    inFlight === 0 &&
    expected > 0 &&
    waiting.length < maxItems &&
    waitingBytes < maxBytes &&
    !holdExpired &&
    maxHoldMs > 0;

  const runNext = () => {
    while (inFlight < maxInFlight && !spacingTimer && waiting.length > 0) {
      if (holding()) {
        holdTimer ??= setTimeout(() => {
          holdTimer = undefined;
          holdExpired = true;
          runNext();
        }, maxHoldMs);
        return;
      }
      const spacingLeft = lastStartedAt + spacingMs - performance.now();
      if (spacingLeft > 0 && waiting.length < maxItems) {
        spacingTimer = setTimeout(() => {
          spacingTimer = undefined;
          runNext();
        }, spacingLeft);
        return;
      }
      clearTimeout(holdTimer);
      holdTimer = undefined;
      holdExpired = false;
      inFlight++;
      lastStartedAt = performance.now();
      void runBatch(takeBatch());
    }
  };

  const submit = (item: Item) =>
    new Promise<Result>((resolve, reject) => {
      waiting.push({ item, resolve, reject });
      waitingBytes += sizeOf(item);
      if (!gatherTick) return runNext();
      if (flushScheduled) return;
      flushScheduled = true;
      queueMicrotask(() => {
        flushScheduled = false;
        runNext();
      });
    });

  const expect = (): ExpectedItem<Item, Result> => {
    expected++;
    let coming = true;
    const arrive = () => {
      if (!coming) return false;
      coming = false;
      expected--;
      return true;
    };
    return {
      submit(item) {
        arrive();
        return submit(item);
      },
      cancel() {
        // A batch may have been waiting for this item only.
        if (arrive()) runNext();
      },
    };
  };

  return { submit, expect };
}
