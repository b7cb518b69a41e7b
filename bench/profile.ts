/**
 * `--profile`: Postern runs with `node --cpu-prof`; this reads the .cpuprofile V8 writes when it
 * exits and lists where the CPU went (self time per function), so docs/benchmarks.md can say what
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

/** The hot functions of every profile written into `dir` (one per Postern process that exited). */
export async function summarizeProfiles(
  dir: string,
  root: string,
): Promise<{ file: string; hot: HotFunction[] }[]> {
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".cpuprofile"));
  return Promise.all(
    files.map(async (file) => ({
      file: join(dir, file),
      hot: hotFunctions(JSON.parse(await readFile(join(dir, file), "utf8")) as CpuProfile, root),
    })),
  );
}
