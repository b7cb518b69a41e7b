// Bundles Postern's TypeScript sources (apps/, packages/, the generated Prisma client) into one
// ES module, dist/postern.mjs, that plain `node` runs: production processes then carry neither
// tsx's loader thread (~35 MB of RSS per process, docs/benchmarks.md) nor on-the-fly compilation.
// Third-party packages stay external (node_modules is installed beside it, as the Dockerfile does).
import { readFileSync } from "node:fs";
import { build } from "esbuild";

const root = new URL("..", import.meta.url);
const { dependencies } = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));

await build({
  absWorkingDir: new URL(".", root).pathname,
  entryPoints: ["apps/cli/src/main.ts"],
  outfile: "dist/postern.mjs",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // A package marked external is external with every subpath (e.g. nodemailer/lib/addressparser).
  external: Object.keys(dependencies),
  sourcemap: "linked",
  logLevel: "warning",
});
