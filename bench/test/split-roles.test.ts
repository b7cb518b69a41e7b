import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator } from "../children";
import { type PosternPeer, startPostern } from "../peers";
import { startCpuWindow } from "../procstat";

/** The arguments a process was started with (/proc/<pid>/cmdline). */
const commandLine = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);

describe("--split-roles with two SMTP and two worker processes", () => {
  let sink: SmtpSink;
  let postern: PosternPeer;
  let load: LoadGenerator;
  beforeAll(async () => {
    sink = await SmtpSink.start({ starttls: false });
    load = new LoadGenerator();
    postern = await startPostern({
      sinkPort: sink.port,
      recipientDomain: "bench.example",
      freshLogins: 0,
      repositoryRoot: join(import.meta.dirname, "../.."),
      processes: { smtp: 2, worker: 2 },
    });
  }, 240_000);
  afterAll(async () => {
    load.stop();
    await postern?.stop();
    await sink?.stop();
  }, 120_000);

  it("runs the API, each SMTP and each worker in a process of its own, named as the columns show them", () => {
    const processes = postern.rssProcesses();
    expect(processes.map((p) => p.name)).toEqual(["api", "smtp1", "smtp2", "worker1", "worker2"]);
    const roles = processes.map(({ pid }) => commandLine(pid).slice(-2));
    expect(roles).toEqual([
      ["start", "api"],
      ["start", "smtp"],
      ["start", "smtp"],
      ["start", "worker"],
      ["start", "worker"],
    ]);
    expect(postern.groups.map((g) => g.name)).toEqual([
      "api",
      "smtp1",
      "smtp2",
      "worker1",
      "worker2",
      "postgres",
      "redis",
    ]);
    expect(postern.smtpPorts).toHaveLength(2);
    expect(postern.unavailable).toBeUndefined();
  });

  it("takes mail on both SMTP processes and delivers all of it, the CPU counted per process", async () => {
    const cpu = startCpuWindow(postern.groups);
    const result = await load.run({
      host: "127.0.0.1",
      ports: postern.smtpPorts,
      mode: "pooled",
      concurrency: 4,
      messageBytes: 10 * 1024,
      durationMs: 1500,
      logins: [postern.login as NonNullable<PosternPeer["login"]>],
      from: "bench@bench.example",
      to: "sink@bench.example",
    });
    expect(result.errors).toBe(0);
    expect(result.accepted.length).toBeGreaterThan(0);
    await sink.waitFor(result.accepted.length, 60_000);
    const cores = cpu.stop();
    // Each SMTP process did TLS handshakes and took messages; the workers delivered them.
    expect(cores.smtp1).toBeGreaterThan(0);
    expect(cores.smtp2).toBeGreaterThan(0);
    expect((cores.worker1 ?? 0) + (cores.worker2 ?? 0)).toBeGreaterThan(0);
    expect(Object.keys(cores)).toEqual(["api", "smtp1", "smtp2", "worker1", "worker2", "postgres", "redis"]);
  }, 120_000);
});
