// Builds the web dashboard (apps/dashboard/web, Preact + wouter + uPlot) into static files in
// apps/dashboard/dist that the API role serves at `/` (apps/api/src/dashboard.ts): one ES module
// and one stylesheet with content-hashed names, and an index.html naming them. No CDN, no inline
// script or style (the dashboard's Content Security Policy allows neither).
//
// Run by npm at install (postinstall), before `npm start` and before `npm test`, so a fresh clone
// never serves stale or missing pages. Prints the JavaScript's gzipped size and fails above the
// budget: what a browser downloads on a slow link is the dashboard's first cost.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = new URL("..", import.meta.url);
const out = new URL("apps/dashboard/dist/", root);
const gzippedBudgetBytes = 150 * 1024;

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  absWorkingDir: new URL(".", root).pathname,
  entryPoints: { app: "apps/dashboard/web/main.tsx" },
  outdir: out.pathname,
  entryNames: "assets/[name]-[hash]",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  minify: true,
  sourcemap: "linked",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs);
const script = outputs.find((file) => file.endsWith(".js"));
const stylesheet = outputs.find((file) => file.endsWith(".css"));
if (!script || !stylesheet) throw new Error("the dashboard build wrote no script or no stylesheet");
const url = (file) => `/assets/${basename(file)}`;

writeFileSync(
  new URL("index.html", out),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Postern</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${url(stylesheet)}">
<script type="module" src="${url(script)}"></script>
</head>
<body>
<div id="app"></div>
<noscript>The Postern dashboard needs JavaScript; the same is available through the API at /docs.</noscript>
</body>
</html>
`,
);

const gzipped = outputs
  .filter((file) => file.endsWith(".js"))
  .reduce((sum, file) => sum + gzipSync(readFileSync(new URL(file, root))).length, 0);
const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
console.log(`dashboard: ${kib(gzipped)} of JavaScript gzipped (budget ${kib(gzippedBudgetBytes)})`);
if (gzipped > gzippedBudgetBytes) {
  console.error(`dashboard: the JavaScript is over its budget of ${kib(gzippedBudgetBytes)} gzipped`);
  process.exit(1);
}
