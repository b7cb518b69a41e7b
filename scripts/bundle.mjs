// Bundles Postern's TypeScript sources (apps/, packages/, the generated Prisma client) into ES
// modules that plain `node` runs, dist/postern.mjs and its chunks: every Postern process (`npm
// start`, the `postern` command, the Docker image) then carries neither tsx's loader thread (~35 MB
// of RSS per process, docs/benchmarks-history.md) nor on-the-fly compilation, which took the CLI about two
// seconds per command. Third-party packages stay external (node_modules is installed beside it, as
// the Dockerfile does). `npm ci` runs it (postinstall), and `postern` (apps/cli/bin/postern.js)
// runs it again when a source changed since.
//
// Split at the dynamic imports (the roles in apps/cli/src/roles.ts, the commands in
// apps/cli/src/main.ts): each is a chunk that imports its own libraries, so a process or worker
// thread loads only those of what it runs. In one file, every `import` of every role is hoisted to
// the top and evaluated at start: a delivery thread would carry Fastify, Swagger and smtp-server
// in its heap, and `postern project list` all of them.
//
// A build writes only the files whose content changed, each by rename, and removes the chunks
// the new entry no longer imports: a build from unchanged sources changes nothing, so builds can
// run while Postern processes and other builds are loading the bundle (the tests run many).
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = join(root, "dist");
/** What the launcher compares with the sources to know whether the bundle is current. */
const inputsFile = join(dist, "inputs.json");
const { dependencies } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

const result = await build({
  absWorkingDir: root,
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
  metafile: true,
  write: false,
  logLevel: "warning",
  plugins: [queryCompilerAsData()],
});

// Chunks before the entry that imports them, the entry before the list that declares it current.
const entry = join(dist, "postern.mjs");
const outputs = result.outputFiles.sort(
  (a, b) => Number(a.path.startsWith(entry)) - Number(b.path.startsWith(entry)),
);
for (const file of outputs) writeIfChanged(file.path, file.contents);

// The sources this bundle was built from, and what else decides its content: the build itself,
// the list of external packages, the compiler options.
const inputs = [
  // Not the modules a plugin made (named "namespace:path"): they are not files.
  ...Object.keys(result.metafile.inputs).filter((path) => !/^[\w-]+:/.test(path)),
  "scripts/bundle.mjs",
  "package.json",
  "tsconfig.json",
];
const stats = Object.fromEntries(
  inputs.map((path) => {
    const { mtimeMs, size } = statSync(join(root, path));
    return [path, [mtimeMs, size]];
  }),
);
writeIfChanged(inputsFile, Buffer.from(`${JSON.stringify({ inputs: stats })}\n`));

const kept = new Set([...outputs.map((file) => file.path), inputsFile]);
for (const path of filesUnder(dist)) {
  // Another build's file being written, unless it was abandoned.
  if (path.endsWith(".tmp") && Date.now() - statSync(path).mtimeMs < 60_000) continue;
  if (!kept.has(path)) rmSync(path, { force: true });
}

function writeIfChanged(path, contents) {
  try {
    if (Buffer.compare(readFileSync(path), contents) === 0) return;
  } catch {
    // Not there yet.
  }
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, contents);
  renameSync(temporary, path);
}

function filesUnder(directory) {
  return readdirSync(directory, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name));
}

/**
 * Prisma's client imports its query compiler (WebAssembly) from a JavaScript module that is one
 * base64 string of 4.5 MB. Node parses that module at a process's first query, which took longer
 * than compiling the WebAssembly itself and, for an operator command, longer than everything it
 * does with the database. In the bundle, that import reads the same installed file as data and
 * takes the string out of it; should Prisma ever ship the module in another shape, it imports it.
 */
function queryCompilerAsData() {
  const namespace = "prisma-query-compiler-as-data";
  return {
    name: namespace,
    setup(build) {
      build.onResolve(
        { filter: /^@prisma\/client\/runtime\/query_compiler_[\w.]+\.wasm-base64\.mjs$/ },
        (args) =>
          args.namespace === namespace ? { path: args.path, external: true } : { path: args.path, namespace },
      );
      build.onLoad({ filter: /.*/, namespace }, (args) => ({
        contents: `import { readFileSync } from "node:fs";
const specifier = ${JSON.stringify(args.path)};
const text = readFileSync(new URL(import.meta.resolve(specifier)), "latin1");
const head = 'const wasm = "';
const end = text.lastIndexOf('";');
export const wasm =
  text.startsWith(head) && end > 0 && /^";\\s*export \\{ wasm \\};?\\s*$/.test(text.slice(end))
    ? text.slice(head.length, end)
    : (await import(specifier)).wasm;
`,
        loader: "js",
        resolveDir: root,
      }));
    },
  };
}
