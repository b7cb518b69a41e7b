// Preloaded (`node --import`) by command-weight.test.ts into a `postern` command: at exit, writes
// to $LOADED_MODULES_FILE the CommonJS modules the process loaded (each package with weight that
// Postern imports is CommonJS or brings one) and the exports of each WebAssembly module it
// compiled (Prisma's query compiler's are `querycompiler_*`; Node's own CommonJS export lexer is
// WebAssembly too).
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const { cache } = createRequire(import.meta.url);
const webAssembly = [];
const { Module, compile, instantiate } = WebAssembly;
const record = (module) => {
  webAssembly.push(Module.exports(module).map((entry) => entry.name));
  return module;
};
WebAssembly.Module = new Proxy(Module, {
  construct: (target, args, newTarget) => record(Reflect.construct(target, args, newTarget)),
});
WebAssembly.compile = async (...args) => record(await compile(...args));
WebAssembly.instantiate = async (source, ...rest) => {
  const result = await instantiate(source, ...rest);
  if (!(source instanceof Module)) record(result.module);
  return result;
};
process.on("exit", () => {
  writeFileSync(process.env.LOADED_MODULES_FILE, JSON.stringify({ files: Object.keys(cache), webAssembly }));
});
