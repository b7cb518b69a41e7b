import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listenerPorts } from "./ports";

const bin = fileURLToPath(new URL("../bin/postern.js", import.meta.url));

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

/** A metric's value in Prometheus' text format. */
function metric(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name} in /metrics`);
  return Number(line.split(" ")[1]);
}

describe("the all-in-one process's memory", () => {
  it("is reported once in /metrics, not once per thread", async () => {
    const ports = await listenerPorts();
    const child = spawn(process.execPath, [bin, "start"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/root",
        ...ctx.env,
        LOG_LEVEL: "warn",
        ...ports,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", () => output.includes("Postern is running") && resolve());
      exited.then((code) => reject(new Error(`postern start exited with ${code}: ${output}`)));
    });
    try {
      // The delivery worker runs in a thread of this process, and /metrics merges its registry.
      expect(output).toMatch(/worker {3}1 thread/);
      const text = await (await fetch(`http://127.0.0.1:${ports.HTTP_PORT}/metrics`)).text();
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      const residentBytes = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]) * 1024;
      // Read a moment apart, so not equal; counted twice, the metric would be twice the process's.
      const reported = metric(text, "postern_process_resident_memory_bytes");
      expect(reported / residentBytes).toBeGreaterThan(0.7);
      expect(reported / residentBytes).toBeLessThan(1.3);
      // Each isolate's own figures are still added up: two heaps, one process.
      expect(metric(text, "postern_nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
    } finally {
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    }
  }, 60_000);
});
