/**
 * `--profile`: Postern runs with `node --cpu-prof`; this reads the .cpuprofile V8 writes when it
 * exits and lists where the CPU went (self time per function), so the benchmark docs can say what
 * the profile showed. Open the file itself in Chrome DevTools (Performance) for the call tree.
 */
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    hitCount?: number;
  }[];
  samples: number[];
}

export interface HotFunction {
  name: string;
  /** Share of all samples spent in this function itself. */
  selfShare: number;
}

/** Self time per function (name + file:line), largest first; idle and GC are kept, they tell too. */
export function hotFunctions(profile: CpuProfile, root: string, top = 20): HotFunction[] {
  const total = profile.samples.length || 1;
  const byName = new Map<string, number>();
  for (const node of profile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? ` ${relative(root, url.replace(/^file:\/\//, ""))}:${lineNumber + 1}` : "";
    const name = `${functionName || "(anonymous)"}${where}`;
    byName.set(name, (byName.get(name) ?? 0) + (node.hitCount ?? 0));
  }
  return [...byName.entries()]
    .map(([name, hits]) => ({ name, selfShare: hits / total }))
    .sort((a, b) => b.selfShare - a.selfShare)
    .slice(0, top);
}

/**
 * Self time per place the code comes from: a package in node_modules, a workspace of ours
 * (apps/smtp, packages/db, ...), Node's internals, or the profiler's own entries (GC, idle).
 */
export function hotOrigins(profile: CpuProfile, root: string): HotFunction[] {
  const total = profile.samples.length || 1;
  const byOrigin = new Map<string, number>();
  for (const node of profile.nodes) {
    byOrigin.set(
      originOf(node.callFrame, root),
      (byOrigin.get(originOf(node.callFrame, root)) ?? 0) + (node.hitCount ?? 0),
    );
  }
  return [...byOrigin.entries()]
    .map(([name, hits]) => ({ name, selfShare: hits / total }))
    .sort((a, b) => b.selfShare - a.selfShare);
}

function originOf(frame: { functionName: string; url: string }, root: string): string {
  if (!frame.url) return frame.functionName.startsWith("(") ? frame.functionName : "node (native)";
  if (frame.url.startsWith("node:")) return "node (internals)";
  const path = relative(root, frame.url.replace(/^file:\/\//, ""));
  const pkg = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path) ?? /^((?:apps|packages)\/[^/]+)/.exec(path);
  return pkg?.[1] ?? path;
}

export interface ProfileSummary {
  file: string;
  origins: HotFunction[];
  hot: HotFunction[];
}

/**
 * The profiles written into `dir`, except those of threads that did next to nothing (tsx's module
 * loader thread writes one too).
 */
export async function summarizeProfiles(dir: string, root: string): Promise<ProfileSummary[]> {
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".cpuprofile"));
  const summaries = await Promise.all(
    files.map(async (file) => {
      const profile = JSON.parse(await readFile(join(dir, file), "utf8")) as CpuProfile;
      return { file: join(dir, file), origins: hotOrigins(profile, root), hot: hotFunctions(profile, root) };
    }),
  );
  return summaries.filter((s) => (s.origins.find((o) => o.name === "(idle)")?.selfShare ?? 0) < 0.9);
}
