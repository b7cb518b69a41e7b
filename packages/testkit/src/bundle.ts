import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/**
 * Once per `vitest run`, before any test: brings dist/postern.mjs up to date with the sources
 * (scripts/bundle.mjs; nothing to do after `npm ci`). The tests that spawn `postern` run the
 * bundle through apps/cli/bin/postern.js, which would otherwise find it stale after an edit and
 * build it in each of them at once.
 */
export default async function bundle() {
  await promisify(execFile)(process.execPath, [
    fileURLToPath(new URL("../../../scripts/bundle.mjs", import.meta.url)),
  ]);
}
