import { execFile } from "node:child_process";
import { access, readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { variables } from "@postern/config";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

/** docker-compose.yml cannot be run here (no Docker engine): it is checked by reading it. */
describe("docker-compose.yml", async () => {
  const root = new URL("../../../", import.meta.url);
  const compose = parse(await readFile(new URL("docker-compose.yml", root), "utf8"), { merge: true }) as {
    services: Record<
      string,
      {
        image?: string;
        build?: string;
        command?: string[];
        ports?: string[];
        environment?: Record<string, string>;
        healthcheck?: { test: string[] };
      }
    >;
  };
  const roles = ["smtp", "worker", "api"];

  it("runs PostgreSQL, Redis and the three Postern roles from one image", async () => {
    expect(Object.keys(compose.services).sort()).toEqual(["api", "postgres", "redis", "smtp", "worker"]);
    expect(compose.services.postgres?.image).toMatch(/^postgres:\d+/);
    expect(compose.services.redis?.image).toMatch(/^redis:\d+/);
    for (const role of roles) {
      const service = compose.services[role];
      expect(service?.build).toBe(".");
      expect(service?.image).toBe("postern:latest");
      expect(service?.command).toEqual(["start", role]);
    }
    await access(new URL("Dockerfile", root));
  });

  it("passes only variables the configuration schema knows", () => {
    for (const role of roles) {
      const names = Object.keys(compose.services[role]?.environment ?? {});
      expect(names.length).toBeGreaterThan(0);
      for (const name of names) expect(Object.keys(variables), `${role}: ${name}`).toContain(name);
    }
  });

  it("publishes 587, 465 and 8080 and checks /health/ready", () => {
    expect(compose.services.smtp?.ports).toEqual(["587:587", "465:465"]);
    expect(compose.services.api?.ports).toEqual(["8080:8080"]);
    expect(compose.services.smtp?.environment).toMatchObject({
      SMTP_PORT: "587",
      SMTPS_PORT: "465",
      HTTP_PORT: "8080",
    });
    for (const role of roles)
      expect(compose.services[role]?.healthcheck?.test.join(" ")).toContain("/health/ready");
  });
});

describe("malloc and V8 heap settings of production processes", async () => {
  const root = new URL("../../../", import.meta.url);
  const text = (path: string) => readFile(new URL(path, root), "utf8");
  const nodeOptions = "--max-old-space-size=512";
  const settings: [string, string][] = [
    ["MALLOC_ARENA_MAX", "2"],
    ["MALLOC_MMAP_THRESHOLD_", "16384"],
    ["NODE_OPTIONS", nodeOptions],
  ];

  it("are the same in the Docker image, `npm start` and the benchmark's Postern", async () => {
    const dockerfile = await text("Dockerfile");
    const start = JSON.parse(await text("package.json")).scripts.start as string;
    const bench = await text("bench/peers.ts");
    for (const [name, value] of settings) {
      expect(dockerfile).toContain(`${name}=${value}`);
      expect(start).toContain(`${name}=${value}`);
      expect(bench).toContain(`${name}: "${value}"`);
    }
  });

  it("limit V8's heap through a flag Node takes from NODE_OPTIONS, in worker threads too", async () => {
    // Node refuses most V8 flags in NODE_OPTIONS (the process would not start); this one it takes.
    // The limit is the old generation's 512 MB plus the young generation's (three 16 MB semi-spaces).
    const script = `const v8 = require("node:v8");
const { Worker } = require("node:worker_threads");
const limit = () => v8.getHeapStatistics().heap_size_limit / 1048576;
new Worker("require('node:worker_threads').parentPort.postMessage(require('node:v8').getHeapStatistics().heap_size_limit / 1048576)", { eval: true })
  .on("message", (thread) => console.log(JSON.stringify({ main: limit(), thread })));`;
    const { stdout } = await promisify(execFile)(process.execPath, ["-e", script], {
      env: { PATH: process.env.PATH ?? "", NODE_OPTIONS: nodeOptions },
    });
    expect(JSON.parse(stdout)).toEqual({ main: 560, thread: 560 });
  });
});
