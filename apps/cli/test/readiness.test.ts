import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "../../smtp/test/smtp-client";
import { listenerPorts } from "./ports";

/**
 * `/health/ready` of the all-in-one `postern start` (API, worker thread, SMTP in one process): 200
 * only while every role serves, so a load balancer that follows it never meets a refused port.
 */

const bin = fileURLToPath(new URL("../bin/postern.js", import.meta.url));

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

type Readiness = { status: number; body: { status: string; checks: Record<string, string> } };

async function readiness(httpPort: number): Promise<Readiness | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${httpPort}/health/ready`);
    return { status: response.status, body: (await response.json()) as Readiness["body"] };
  } catch {
    return undefined; // not listening (yet, or any more)
  }
}

describe("/health/ready of postern start", () => {
  it("is 503 naming the roles that do not serve yet, 200 only once SMTP greets, 503 again while stopping", async () => {
    const env = {
      ...ctx.env,
      LOG_LEVEL: "warn",
      ...(await listenerPorts()),
    };
    const httpPort = Number(env.HTTP_PORT);
    const child = spawn(process.execPath, [bin, "start"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...env },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    let hasExited = false;
    void exited.then(() => (hasExited = true));

    // From the moment it is spawned, as a load balancer's health check would, only faster.
    const before: Readiness[] = [];
    let first: Readiness | undefined;
    while (!first) {
      if (hasExited) throw new Error(`postern start exited: ${output}`);
      const answer = await readiness(httpPort);
      if (answer?.status === 200) first = answer;
      else if (answer) before.push(answer);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // At the first 200, the SMTP port greets.
    const { client, banner } = await RawSmtp.connect(Number(env.SMTP_PORT));
    expect(banner.code).toBe(220);
    client.close();
    expect(first.body).toEqual({
      status: "ok",
      checks: { postgres: "ok", redis: "ok", api: "ok", worker: "ok", smtp: "ok" },
    });
    // The API serves first; until the worker thread and SMTP do, readiness says which one waits.
    expect(before.length).toBeGreaterThan(0);
    for (const answer of before) {
      expect(answer.status).toBe(503);
      const waiting = Object.entries(answer.body.checks).filter(([, state]) => state !== "ok");
      expect(waiting.length).toBeGreaterThan(0);
    }
    expect(before.some((answer) => answer.body.checks.smtp === "starting")).toBe(true);

    // A message in DATA holds SMTP's shutdown: meanwhile readiness is 503, naming the roles stopping.
    const { project, smtp } = await createProjectFixture(ctx.db, ctx.config);
    const { client: sender, auth } = await RawSmtp.session(Number(env.SMTP_PORT), smtp);
    expect(auth?.code).toBe(235);
    expect((await sender.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    expect((await sender.command("RCPT TO:<user@example.net>")).code).toBe(250);
    expect((await sender.command("DATA")).code).toBe(354);
    sender.write("Subject: drained\r\n\r\nhello\r\n");
    process.kill(-(child.pid as number), "SIGTERM");
    await expect
      .poll(async () => (await readiness(httpPort))?.body.checks.smtp, { timeout: 10_000 })
      .toBe("stopping");
    const stopping = await readiness(httpPort);
    expect(stopping?.status).toBe(503);
    expect(stopping?.body.status).toBe("unavailable");
    expect((await sender.command(".")).code).toBe(250);
    sender.close();
    expect(await exited).toBe(0);
    expect(await ctx.db.message.count({ where: { projectId: project.id } })).toBe(1);
  }, 90_000);
});
