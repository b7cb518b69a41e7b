#!/usr/bin/env node
// The `postern` command. Postern runs its TypeScript sources through tsx (no build step to forget);
// see docs/architecture.md.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
