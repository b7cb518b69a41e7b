#!/usr/bin/env node
// The `postern` command run from its TypeScript sources through tsx, compiled at every start: for
// CPU profiles that name the source files (`npm run bench -- --profile`). Everything else runs the
// bundle (postern.js beside it).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
