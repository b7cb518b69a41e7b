import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/**
 * CPU and memory accounting from /proc, for the process groups the benchmark compares
 * (Postern, PostgreSQL, Redis, load generator, sink, Postfix).
 *
 * CPU of a process tree over a window = Δ Σ over the live tree of (utime + stime + cutime + cstime).
 * A descendant that exits during the window is reaped by its parent, whose cutime/cstime then hold
 * its time, so short-lived processes (PostgreSQL backends, Postfix smtpd) are counted exactly once.
 */

/** Clock ticks per second (USER_HZ); 100 on every Linux the benchmark targets (`getconf CLK_TCK`). */
export const clockTicksPerSecond = 100;

export interface ProcessSample {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime + cutime + cstime, in clock ticks. */
  cpuTicks: number;
}

/** Parses /proc/<pid>/stat. The command name is in parentheses and may itself hold spaces or ')'. */
export function parseStat(text: string): ProcessSample {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  // Fields after the name, numbered from 3 (state) as in proc(5).
  const rest = text
    .slice(close + 2)
    .trim()
    .split(" ");
  const field = (n: number) => Number(rest[n - 3]);
  return { pid, ppid: field(4), comm, cpuTicks: field(14) + field(15) + field(16) + field(17) };
}

/** Every live process, by pid. Processes that vanish while being read are skipped. */
export function snapshotProcesses(): Map<number, ProcessSample> {
  const processes = new Map<number, ProcessSample>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const sample = parseStat(readFileSync(`/proc/${entry}/stat`, "utf8"));
      processes.set(sample.pid, sample);
    } catch {
      // exited between readdir and read
    }
  }
  return processes;
}

/** The pids of `root` and all its live descendants, minus the subtrees rooted at `exclude`. */
export function processTree(
  processes: Map<number, ProcessSample>,
  root: number,
  exclude: ReadonlySet<number> = new Set(),
): number[] {
  if (!processes.has(root) || exclude.has(root)) return [];
  const children = new Map<number, number[]>();
  for (const p of processes.values()) {
    const list = children.get(p.ppid) ?? [];
    list.push(p.pid);
    children.set(p.ppid, list);
  }
  const tree: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop() as number;
    tree.push(pid);
    for (const child of children.get(pid) ?? []) if (!exclude.has(child)) pending.push(child);
  }
  return tree;
}

/** A named set of process trees whose CPU is summed (e.g. "postgres": the postmaster's tree). */
export interface ProcessGroup {
  name: string;
  roots: () => number[];
  /** Subtrees that belong to another group (Postern's embedded redis-server is its child). */
  exclude?: () => number[];
}

export function groupTicks(processes: Map<number, ProcessSample>, group: ProcessGroup): number {
  const exclude = new Set(group.exclude?.() ?? []);
  let ticks = 0;
  for (const root of group.roots())
    for (const pid of processTree(processes, root, exclude)) ticks += processes.get(pid)?.cpuTicks ?? 0;
  return ticks;
}

/** Samples each group's CPU at the start of a window; `stop()` gives the cores each used during it. */
export function startCpuWindow(groups: ProcessGroup[]): { stop(): Record<string, number> } {
  const startedAt = performance.now();
  const before = snapshotProcesses();
  const start = new Map(groups.map((g) => [g.name, groupTicks(before, g)]));
  return {
    stop() {
      const seconds = (performance.now() - startedAt) / 1000;
      const after = snapshotProcesses();
      return Object.fromEntries(
        groups.map((g) => [g.name, coresUsed(start.get(g.name) ?? 0, groupTicks(after, g), seconds)]),
      );
    },
  };
}

/** Ticks spent over a wall-clock window, as a number of cores (1.0 = one core busy all the time). */
export function coresUsed(ticksBefore: number, ticksAfter: number, seconds: number): number {
  if (seconds <= 0) return 0;
  return Math.max(0, ticksAfter - ticksBefore) / clockTicksPerSecond / seconds;
}

/** Peak resident set size (VmHWM) of a process in bytes, or undefined when it is gone. */
export function peakRss(pid: number): number | undefined {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resets a process's peak RSS to its current RSS (writing 5 to clear_refs, Linux ≥ 4.0), so each
 * scenario reports its own peak. Needs the same user or root; returns false when not allowed.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}
