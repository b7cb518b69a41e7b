import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["apps/*/test/**/*.test.ts", "packages/*/test/**/*.test.ts", "bench/test/**/*.test.ts"],
    globalSetup: ["packages/testkit/src/global-setup.ts", "packages/testkit/src/bundle.ts"],
    // Real servers, real bcrypt: generous but bounded.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default"],
  },
});
