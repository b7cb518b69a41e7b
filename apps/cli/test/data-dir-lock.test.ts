import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listenerPorts } from "./ports";

/**
 * The DATA_DIR lock (packages/embedded/src/data-dir-lock.ts) of the all-in-one `postern start`
 * on embedded PostgreSQL and Redis: a restart right after `kill -9` and two concurrent starts.
 */

const bin = fileURLToPath(new URL("../bin/postern.js", import.meta.url));

interface Run {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function spawnPostern(command: string, args: string[], env: Record<string, string>): Run {
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", LOG_LEVEL: "warn", ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d) => (output += d));
  child.stderr?.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, output: () => output, exited };
}

const start = (env: Record<string, string>) => spawnPostern(process.execPath, [bin, "start"], env);

/** Resolves once the process says it runs; rejects with its output if it exits first. */
async function running(run: Run, until = (output: string) => output.includes("Postern is running")) {
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (until(run.output())) {
        clearInterval(timer);
        resolve();
      }
    }, 50);
    run.exited.then((code) => {
      clearInterval(timer);
      reject(new Error(`exited with ${code}: ${run.output()}`));
    });
  });
}

function processState(pid: number): Promise<string> {
  return readFile(`/proc/${pid}/stat`, "utf8").then(
    (stat) => stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3),
    () => "gone",
  );
}

async function portsEnv() {
  return {
    HTTP_HOST: "127.0.0.1",
    SMTP_HOST: "127.0.0.1",
    ...(await listenerPorts()),
  };
}

describe("the DATA_DIR lock", () => {
  let parent: string;
  beforeAll(async () => {
    parent = await mkdtemp(join(tmpdir(), "postern-lock-"));
    // Embedded PostgreSQL runs as an unprivileged user when Postern runs as root.
    await chmod(parent, 0o755);
  });
  afterAll(() => rm(parent, { recursive: true, force: true }));

  it("lets a start right after kill -9 of the whole group run, while the killed process is not yet reaped", async () => {
    const env = { DATA_DIR: join(parent, "restart"), ...(await portsEnv()) };
    // Postern in a session of its own under a parent that never reaps it (`sleep`, standing for a
    // busy supervisor or a container init that does not reap): once killed it stays a zombie
    // with its pid, as long as this test wants.
    const supervisor = spawnPostern(
      "sh",
      ["-c", 'setsid "$0" "$@" & exec sleep 600', process.execPath, bin, "start"],
      env,
    );
    try {
      await running(supervisor);
      const pid = Number((await readFile(join(env.DATA_DIR, "postern.pid"), "utf8")).trim());
      expect(await processState(pid)).not.toBe("gone");
      process.kill(-pid, "SIGKILL");
      await expect.poll(() => processState(pid), { timeout: 10_000 }).toBe("Z");

      const again = start(env);
      await running(again);
      expect(again.output()).not.toContain("in use");
      expect((await fetch(`http://127.0.0.1:${env.HTTP_PORT}/health`)).status).toBe(200);
      // The killed process is still there, unreaped, and the new one owns DATA_DIR.
      expect(await processState(pid)).toBe("Z");
      expect((await readFile(join(env.DATA_DIR, "postern.pid"), "utf8")).trim()).toBe(
        String(again.child.pid),
      );
      again.child.kill("SIGINT");
      expect(await again.exited).toBe(0);
    } finally {
      process.kill(-(supervisor.child.pid as number), "SIGKILL");
    }
  }, 120_000);

  it("refuses the second of two concurrent starts with one line, and the first runs", async () => {
    const dataDir = join(parent, "concurrent");
    const first = start({ DATA_DIR: dataDir, ...(await portsEnv()) });
    const second = start({ DATA_DIR: dataDir, ...(await portsEnv()) });
    // Whichever takes the lock first runs; the other stops at once, naming DATA_DIR and the owner.
    const loser = await Promise.race([
      first.exited.then(() => ({ loser: first, winner: second })),
      second.exited.then(() => ({ loser: second, winner: first })),
    ]);
    expect(await loser.loser.exited).toBe(1);
    const lines = loser.loser.output().trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^postern: DATA_DIR ${dataDir} is in use by another Postern( \\(pid ${loser.winner.child.pid}\\))?; `,
      ),
    );
    await running(loser.winner);
    loser.winner.child.kill("SIGINT");
    expect(await loser.winner.exited).toBe(0);

    // Once the owner has stopped, DATA_DIR is free again.
    const later = start({ DATA_DIR: dataDir, ...(await portsEnv()) });
    await running(later);
    later.child.kill("SIGINT");
    expect(await later.exited).toBe(0);
  }, 120_000);
});
