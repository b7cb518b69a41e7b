// Generates the Prisma client into packages/db/src/generated (run by `npm install` and `npm run build`).
// Prisma's CLI tries to download its schema engine unless PRISMA_SCHEMA_ENGINE_BINARY names an
// executable; generation never runs it, so an honest stand-in is enough.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const env = { ...process.env, PRISMA_HIDE_UPDATE_MESSAGE: "1", CHECKPOINT_DISABLE: "1" };
env.PRISMA_SCHEMA_ENGINE_BINARY ??= fileURLToPath(
  new URL("./schema-engine-unavailable.mjs", import.meta.url),
);
const result = spawnSync("npx", ["--no-install", "prisma", "generate"], { cwd: root, env, stdio: "inherit" });
process.exit(result.status ?? 1);
