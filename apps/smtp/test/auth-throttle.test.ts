import { randomBytes } from "node:crypto";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createMetricsRegistry, type Registry } from "@postern/telemetry";
import { captureLog, createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import nodemailer from "nodemailer";
import { afterEach, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

/**
 * AUTH brute-force defence through real SMTP sessions: clients are told apart by the loopback
 * address they connect from (127.0.0.2, 127.0.0.3, … work without configuration).
 */

let ctx: TestContext | undefined;
let smtp: RunningSmtp | undefined;
let metrics: Registry;
/** Everything the SMTP role logged, at debug level. */
let captured = captureLog("debug");

afterEach(async () => {
  await smtp?.stop();
  smtp = undefined;
  await ctx?.close();
  ctx = undefined;
});

async function startNode(c: TestContext) {
  metrics = createMetricsRegistry();
  smtp = await startSmtp({ ...c, log: captured.log, metrics }, { smtpPort: 0 });
  return smtp.ports.smtp;
}

async function start(env: Record<string, string>) {
  captured = captureLog("debug");
  const c = await createTestContext(env);
  ctx = c;
  return { c, port: await startNode(c) };
}

/** One session from `from`: EHLO, STARTTLS, AUTH PLAIN; the AUTH reply as "code enhanced". */
async function tryAuth(port: number, from: string, username: string, password: string) {
  const { client, auth } = await RawSmtp.session(port, { username, password }, { localAddress: from });
  client.close();
  return `${auth?.code} ${auth?.enhanced}`;
}

async function sendFrom(port: number, from: string, auth: { username: string; password: string }) {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    localAddress: from,
    requireTLS: true,
    auth: { user: auth.username, pass: auth.password },
    tls: { rejectUnauthorized: false },
  });
  try {
    const info = await transport.sendMail({
      from: "app@example.com",
      to: "someone@example.org",
      subject: "Hello",
      text: "Hello there",
    });
    return info.response.slice(0, 3);
  } catch (error) {
    return String((error as { responseCode?: number }).responseCode);
  } finally {
    transport.close();
  }
}

async function metricValue(name: string): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get();
  return metric?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

const wrongSecret = () => `pst_secret_${randomBytes(24).toString("base64url")}`;

describe("AUTH throttling by client address", () => {
  it("never locks a key's owner out: ten wrong secrets from ten addresses, then the owner from an eleventh gets 235", async () => {
    const { c, port } = await start({ SMTP_AUTH_FAILURES_PER_KEY: "10", SMTP_AUTH_FAILURES_PER_IP: "20" });
    const { smtp: owner } = await createProjectFixture(c.db, c.config);
    const replies: string[] = [];
    for (let i = 2; i <= 11; i++)
      replies.push(await tryAuth(port, `127.0.0.${i}`, owner.username, wrongSecret()));
    expect(replies).toEqual(Array(10).fill("535 5.7.8"));
    expect(await tryAuth(port, "127.0.0.12", owner.username, owner.password)).toBe("235 2.7.0");
    expect(await sendFrom(port, "127.0.0.12", owner)).toBe("250");
  });

  it("takes a point before bcrypt: 40 parallel wrong secrets from one address cost the allowance in bcrypt runs, then even the right secret gets 421 4.7.0 there", async () => {
    const { c, port } = await start({ SMTP_AUTH_FAILURES_PER_KEY: "10", SMTP_AUTH_FAILURES_PER_IP: "100" });
    const { smtp: owner } = await createProjectFixture(c.db, c.config);
    const replies = await Promise.all(
      Array.from({ length: 40 }, () => tryAuth(port, "127.0.0.3", owner.username, wrongSecret())),
    );
    expect(await metricValue("postern_smtp_auth_bcrypt_total")).toBe(10);
    // The failure that spent the allowance is answered 421 too.
    expect(replies.filter((r) => r === "535 5.7.8")).toHaveLength(9);
    expect(replies.filter((r) => r === "421 4.7.0")).toHaveLength(31);
    expect(await tryAuth(port, "127.0.0.3", owner.username, owner.password)).toBe("421 4.7.0");
    expect(await metricValue("postern_smtp_auth_bcrypt_total")).toBe(10);
    // Another address is not affected.
    expect(await tryAuth(port, "127.0.0.4", owner.username, owner.password)).toBe("235 2.7.0");
  });

  it("lets a tenant that authenticated from an address keep sending while that address is blocked (shared NAT)", async () => {
    const { c, port } = await start({ SMTP_AUTH_FAILURES_PER_KEY: "3", SMTP_AUTH_FAILURES_PER_IP: "5" });
    const { smtp: tenant } = await createProjectFixture(c.db, c.config, { name: "tenant" });
    const { smtp: newcomer } = await createProjectFixture(c.db, c.config, { name: "newcomer" });
    expect(await sendFrom(port, "127.0.0.5", tenant)).toBe("250");
    // An attacker behind the same address spends the address's allowance.
    const attacks: string[] = [];
    for (let i = 0; i < 6; i++)
      attacks.push(
        await tryAuth(port, "127.0.0.5", `pst_smtp_${randomBytes(24).toString("base64url")}`, "x"),
      );
    expect(attacks).toEqual([...Array(4).fill("535 5.7.8"), "421 4.7.0", "421 4.7.0"]);
    // Another node (nothing cached): the tenant still authenticates and sends from that address,
    // a key that never authenticated from it waits for the window to end.
    await smtp?.stop();
    const secondNode = await startNode(c);
    expect(await tryAuth(secondNode, "127.0.0.5", tenant.username, tenant.password)).toBe("235 2.7.0");
    expect(await sendFrom(secondNode, "127.0.0.5", tenant)).toBe("250");
    expect(await tryAuth(secondNode, "127.0.0.5", newcomer.username, newcomer.password)).toBe("421 4.7.0");
    expect(await tryAuth(secondNode, "127.0.0.6", newcomer.username, newcomer.password)).toBe("235 2.7.0");
  });
});

describe("blocked attempts are audited and logged once per window", () => {
  it("a flood of AUTH from a blocked address writes one auth.blocked row with the count, and one log line", async () => {
    const { c, port } = await start({ SMTP_AUTH_FAILURES_PER_KEY: "100", SMTP_AUTH_FAILURES_PER_IP: "3" });
    const unknownKey = () => `pst_smtp_${randomBytes(24).toString("base64url")}`;
    const replies: string[] = [];
    for (let i = 0; i < 3; i++) replies.push(await tryAuth(port, "127.0.0.8", unknownKey(), "x"));
    expect(replies).toEqual(["535 5.7.8", "535 5.7.8", "421 4.7.0"]);
    const flood = 60;
    for (let batch = 0; batch < flood / 10; batch++) {
      const refused = await Promise.all(
        Array.from({ length: 10 }, () => tryAuth(port, "127.0.0.8", unknownKey(), "x")),
      );
      expect(refused).toEqual(Array(10).fill("421 4.7.0"));
    }
    // Stopping writes the counts of open windows.
    await smtp?.stop();
    smtp = undefined;
    const blocked = await c.db.auditEvent.findMany({ where: { action: "auth.blocked" } });
    expect(blocked).toHaveLength(1);
    expect(blocked[0]).toMatchObject({ ip: "127.0.0.8" });
    // The attempt that spent the allowance and every one refused after it.
    expect(blocked[0]?.details).toMatchObject({ scope: "ip", address: "127.0.0.8", attempts: flood + 1 });
    expect(await c.db.auditEvent.count({ where: { action: "auth.failure" } })).toBe(3);
    expect(captured.text().match(/authentication blocked/g)).toHaveLength(1);
  });
});

describe("usernames that look like secrets", () => {
  it("never logs or audits a secret put in the username, whatever its case, place or encoding", async () => {
    const { c, port } = await start({
      SMTP_AUTH_FAILURES_PER_IP: "1000",
      SMTP_AUTH_FAILURES_PER_KEY: "1000",
    });
    const { smtp: owner } = await createProjectFixture(c.db, c.config);
    const part = () => randomBytes(24).toString("base64url");
    const attempts: { username: string; secretPart: string }[] = [];
    const add = (make: (secret: string) => string, secretPart = part()) =>
      attempts.push({ username: make(secretPart), secretPart });
    add((s) => ` pst_secret_${s}`);
    add((s) => `PST_SECRET_${s}`);
    add((s) => `Pst_Secret_${s}`);
    add(() => `${owner.username}:${owner.password}`, owner.password.slice("pst_secret_".length));
    add((s) => `${owner.username}pst_secret_${s}`);
    add((s) => `app-pst_api_${s}`);
    add((s) => `admin=pst_admin_${s}`);
    const blob = Buffer.from(`${owner.username}:${owner.password}`).toString("base64");
    add(() => blob, blob);
    add((s) => `correct-horse-${s}`);
    for (const { username } of attempts)
      expect(await tryAuth(port, "127.0.0.9", username, "x")).toBe("535 5.7.8");
    await smtp?.stop();
    smtp = undefined;
    const audit = JSON.stringify(await c.db.auditEvent.findMany(), (_k, v) =>
      typeof v === "bigint" ? v.toString() : v,
    );
    expect(audit).toContain("not an API key");
    expect(captured.text()).toContain("authentication failed");
    for (const { secretPart } of attempts) {
      expect(audit).not.toContain(secretPart);
      expect(captured.text()).not.toContain(secretPart);
    }
    expect(audit.toLowerCase()).not.toMatch(/pst_(secret|api|admin)_/);
    expect(captured.text().toLowerCase()).not.toMatch(/pst_(secret|api|admin)_/);
  });
});
