import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext | undefined;
let smtp: RunningSmtp | undefined;

afterEach(async () => {
  await smtp?.stop();
  await ctx?.close();
});

async function start(env: Record<string, string>) {
  ctx = await createTestContext(env);
  smtp = await startSmtp(
    { ...ctx, log: createLogger({ level: "silent" }), metrics: createMetricsRegistry() },
    { smtpPort: 0 },
  );
  return { ctx, port: smtp.ports.smtp };
}

async function auditEvents(c: TestContext, action: string) {
  for (let i = 0; i < 50; i++) {
    const rows = await c.db.auditEvent.findMany({ where: { action }, orderBy: { id: "asc" } });
    if (rows.length > 0) return rows;
    await new Promise((r) => setTimeout(r, 20));
  }
  return [];
}

describe("brute-force lockout", () => {
  it("blocks a key from one address after its allowance of failures there, even for the right secret, with 421 4.7.0", async () => {
    const { ctx: c, port } = await start({
      SMTP_AUTH_FAILURES_PER_KEY: "3",
      SMTP_AUTH_FAILURES_PER_IP: "100",
    });
    const { project, smtp: auth } = await createProjectFixture(c.db, c.config);
    const wrong = { username: auth.username, password: "pst_secret_guess" };
    for (let i = 0; i < 2; i++) {
      const { client, auth: reply } = await RawSmtp.session(port, wrong);
      expect([reply?.code, reply?.enhanced]).toEqual([535, "5.7.8"]);
      client.close();
    }
    const { client: third, auth: thirdReply } = await RawSmtp.session(port, wrong);
    expect([thirdReply?.code, thirdReply?.enhanced]).toEqual([421, "4.7.0"]);
    expect(await third.waitClosed()).toBe(true);
    // Blocked from this address: the right secret does not help the guesser there.
    const { client: owner, auth: ownerReply } = await RawSmtp.session(port, auth);
    expect([ownerReply?.code, ownerReply?.enhanced]).toEqual([421, "4.7.0"]);
    expect(await owner.waitClosed()).toBe(true);
    // From any other address the key works (auth-throttle.test.ts goes further).
    const { client: elsewhere, auth: elsewhereReply } = await RawSmtp.session(port, auth, {
      localAddress: "127.0.0.2",
    });
    expect(elsewhereReply?.code).toBe(235);
    elsewhere.close();
    const blocked = await auditEvents(c, "auth.blocked");
    expect(blocked[0]).toMatchObject({ projectId: project.id, ip: "127.0.0.1" });
    expect(blocked[0]?.details).toMatchObject({ reason: "blocked", scope: "key", username: auth.username });
    expect(await auditEvents(c, "auth.failure")).toHaveLength(3);
  });

  it("blocks an address after its allowance of failures across keys", async () => {
    const { ctx: c, port } = await start({
      SMTP_AUTH_FAILURES_PER_KEY: "100",
      SMTP_AUTH_FAILURES_PER_IP: "3",
    });
    const { smtp: auth } = await createProjectFixture(c.db, c.config);
    const replies: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { client, auth: reply } = await RawSmtp.session(port, {
        username: `pst_smtp_unknown${i}`,
        password: "pst_secret_x",
      });
      replies.push(reply?.code ?? 0);
      client.close();
    }
    expect(replies).toEqual([535, 535, 421]);
    const { auth: later } = await RawSmtp.session(port, auth);
    expect([later?.code, later?.enhanced]).toEqual([421, "4.7.0"]);
    expect((await auditEvents(c, "auth.blocked"))[0]?.details).toMatchObject({ scope: "ip" });
  });
});
