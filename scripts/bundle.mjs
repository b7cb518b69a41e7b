// Bundles Postern's TypeScript sources (apps/, packages/, the generated Prisma client) into ES
// modules that plain `node` runs, dist/postern.mjs and its chunks: production processes then carry
// neither tsx's loader thread (tens of MB of RSS per process, docs/benchmarks-history.md, "The
// production bundle") nor on-the-fly compilation. Third-party packages stay external (node_modules
// is installed beside it, as the Dockerfile does).
//
// Split at the roles' dynamic imports (apps/cli/src/roles.ts): each role is a chunk that imports
// its own libraries, so a process or worker thread loads only those of the roles it runs. In one
// file, every `import` of every role is hoisted to the top and evaluated at start: a delivery
// thread would carry Fastify, Swagger and smtp-server in its heap.
import { readFileSync, rmSync } from "node:fs";
import { build } from "esbuild";

const root = new URL("..", import.meta.url);
const { dependencies } = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));

// Chunk names carry a content hash: a build removes the previous one's.
rmSync(new URL("dist", root), { recursive: true, force: true });

await build({
  absWorkingDir: new URL(".", root).pathname,
  entryPoints: ["apps/cli/src/main.ts"],
  outdir: "dist",
  entryNames: "postern",
  chunkNames: "chunks/[name]-[hash]",
  outExtension: { ".js": ".mjs" },
  splitting: true,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // A package marked external is external with every subpath (e.g. nodemailer/lib/addressparser).
  external: Object.keys(dependencies),
  sourcemap: "linked",
  logLevel: "warning",
});
