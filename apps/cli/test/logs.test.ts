import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePorts } from "@postern/embedded";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "../../smtp/test/smtp-client";

const bin = fileURLToPath(new URL("../bin/postern.js", import.meta.url));

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

/**
 * Runs `postern start` with `env`, its stdout a pipe as under a service manager (or, `terminal`, a
 * terminal: util-linux's `script` gives it one), makes it log a successful and a failed SMTP AUTH
 * and an authorized API request, stops it, and returns what it wrote with the secrets in play.
 */
async function runAndLog(
  env: Record<string, string>,
  { terminal = false } = {},
): Promise<{ output: string; secrets: string[] }> {
  const { smtp: credential } = await createProjectFixture(ctx.db, ctx.config);
  const [http, smtp, smtps] = (await freePorts(3)) as [number, number, number];
  const ports = { HTTP_PORT: http, SMTP_PORT: smtp, SMTPS_PORT: smtps };
  const command = [process.execPath, bin, "start"];
  const [file, ...args] = terminal
    ? [
        "script",
        "--quiet",
        "--return",
        "--command",
        command.map((word) => `'${word}'`).join(" "),
        "/dev/null",
      ]
    : command;
  const child = spawn(file as string, args, {
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/root",
      ...ctx.env,
      LOG_LEVEL: "debug",
      ...Object.fromEntries(Object.entries(ports).map(([name, port]) => [name, String(port)])),
      ...env,
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

  const good = await RawSmtp.session(ports.SMTP_PORT, credential);
  expect(good.auth?.code).toBe(235);
  good.client.close();
  // A client that swaps its key and secret sends the secret as the username, which is logged.
  const swapped = await RawSmtp.session(ports.SMTP_PORT, {
    username: credential.password,
    password: credential.username,
  });
  expect(swapped.auth?.code).toBe(535);
  swapped.client.close();
  const admin = await fetch(`http://127.0.0.1:${ports.HTTP_PORT}/admin/projects`, {
    headers: { authorization: `Bearer ${ctx.env.ADMIN_TOKEN}` },
  });
  expect(admin.status).toBe(200);

  // `script` runs Postern as its child: the banner names its pid.
  process.kill(Number(/Postern is running .*, pid (\d+)/.exec(output)?.[1]), "SIGTERM");
  expect(await exited).toBe(0);
  const secrets = [credential.password, ctx.env.ADMIN_TOKEN, ctx.env.ENCRYPTION_KEY].map(String);
  // A terminal ends lines with CR LF.
  return { output: output.replaceAll("\r\n", "\n"), secrets };
}

/** The lines of `postern start`'s output that are log entries (not its "Postern is running" banner). */
const logLines = (output: string) =>
  output.split("\n").filter((line) => line !== "" && !/^(Postern is running| {2})/.test(line));

describe("log lines (LOG_FORMAT)", () => {
  it("are JSON objects, one a line, with LOG_FORMAT=json and by default when stdout is not a terminal", async () => {
    for (const format of ["json", undefined]) {
      const { output, secrets } = await runAndLog(format ? { LOG_FORMAT: format } : {});
      const entries = logLines(output).map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(entries.length).toBeGreaterThan(3);
      for (const entry of entries) {
        expect(entry).toMatchObject({ level: expect.any(Number), msg: expect.any(String) });
        expect(entry.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      }
      expect(entries.map((entry) => entry.msg)).toEqual(
        expect.arrayContaining(["authenticated", "authentication failed", "stopped"]),
      );
      for (const secret of secrets) expect(output).not.toContain(secret);
    }
  }, 90_000);

  it("are one readable line each, time, level, name and message first, with LOG_FORMAT=pretty", async () => {
    const { output, secrets } = await runAndLog({ LOG_FORMAT: "pretty" });
    const lines = logLines(output);
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) {
      expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) \(postern\): \S/);
    }
    // The entry's fields follow the message on the same line; no colors when it is not a terminal.
    expect(lines.find((line) => line.includes("): authentication failed "))).toMatch(
      /"reason":"bad_secret"|"reason":"unknown_key"/,
    );
    expect(lines.some((line) => line.includes("): stopped"))).toBe(true);
    expect(output).not.toContain("\u001b[");
    for (const secret of secrets) expect(output).not.toContain(secret);
  }, 60_000);

  it("are readable lines, colored, by default when stdout is a terminal", async () => {
    const { output, secrets } = await runAndLog({}, { terminal: true });
    expect(output).toContain("\u001b[");
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the terminal's color sequences
    const lines = logLines(output.replace(/\u001b\[[0-9;]*m/g, ""));
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] [A-Z]+ \(postern\): \S/);
    expect(lines.some((line) => line.includes("): authentication failed "))).toBe(true);
    for (const secret of secrets) expect(output).not.toContain(secret);
  }, 60_000);
});
