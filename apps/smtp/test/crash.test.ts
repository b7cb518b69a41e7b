import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext;
let child: ChildProcess | undefined;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(async () => {
  child?.kill("SIGKILL");
  await ctx.close();
});

/** `postern start smtp` as a separate process; resolves with its SMTP port once it listens. */
function startPostern(): Promise<number> {
  const bin = resolve(import.meta.dirname, "../../cli/bin/postern.js");
  child = spawn(process.execPath, [bin, "start", "smtp"], {
    env: { ...process.env, ...ctx.env, SMTP_PORT: "0", SMTPS_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolvePort, reject) => {
    let output = "";
    child?.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const port = /SMTP\s+\S+:(\d+)/.exec(output)?.[1];
      if (port) resolvePort(Number(port));
    });
    child?.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child?.once("exit", (code) => reject(new Error(`postern exited with ${code}: ${output}`)));
  });
}

describe("durability of 250", () => {
  it("a message answered 250 is committed with its audit event even if the process is SIGKILLed at once", async () => {
    const port = await startPostern();
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const { client } = await RawSmtp.session(port, auth);
    client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    await client.read();
    await client.read();
    await client.read();
    client.write("From: app@example.com\r\nSubject: durable\r\n\r\nbody\r\n.\r\n");
    const reply = await client.read();
    child?.kill("SIGKILL");
    expect(reply.code).toBe(250);
    const id = /queued as (\S+)$/.exec(reply.text)?.[1] as string;
    await new Promise<void>((r) => (child?.exitCode !== null ? r() : child.once("exit", () => r())));

    const stored = await ctx.db.message.findUnique({
      where: { id },
      include: { body: true, recipients: true },
    });
    expect(stored?.subject).toBe("durable");
    expect(stored?.recipients.map((r) => r.address)).toEqual(["a@example.org"]);
    expect(Buffer.from(stored?.body?.data ?? []).toString()).toContain("\r\n\r\nbody\r\n");
    const audit = await ctx.db.auditEvent.findMany({ where: { action: "message.accepted" } });
    expect(audit.map((a) => (a.details as { messageId: string }).messageId)).toEqual([id]);
  });
});
