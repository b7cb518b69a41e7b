#!/usr/bin/env node
// The `postern` command. It runs dist/postern.mjs, the bundle of Postern's TypeScript sources that
// `npm ci` builds (scripts/bundle.mjs): plain node starts it in a fraction of the time that
// compiling the sources at every start took. When a source file has changed since the bundle was
// built, it builds it again first (about a second), so that the command never runs stale code and
// there is no build step to forget. postern-sources.js beside it runs the sources through tsx
// instead (profiles that name the source files). See docs/architecture.md.
import { execFileSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isMainThread } from "node:worker_threads";

const root = fileURLToPath(new URL("../../../", import.meta.url));

/** Every file the bundle was built from is as the build saw it (its modification time and size). */
function bundleIsCurrent() {
  let inputs;
  try {
    ({ inputs } = JSON.parse(readFileSync(join(root, "dist/inputs.json"), "utf8")));
  } catch {
    return false;
  }
  return Object.entries(inputs).every(([path, [mtimeMs, size]]) => {
    const stats = statSync(join(root, path), { throwIfNoEntry: false });
    return stats?.mtimeMs === mtimeMs && stats.size === size;
  });
}

// A worker thread of `postern start` runs the bundle its process checked.
if (isMainThread && !bundleIsCurrent()) {
  try {
    // On stderr, if anything: stdout is the command's output, which scripts parse.
    execFileSync(process.execPath, [join(root, "scripts/bundle.mjs")], { stdio: ["ignore", 2, 2] });
  } catch {
    // esbuild has said what it could not compile.
    process.exit(1);
  }
}
await import(pathToFileURL(join(root, "dist/postern.mjs")).href);
