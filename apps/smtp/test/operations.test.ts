import { X509Certificate } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { selfSignedCertificate } from "@postern/embedded";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext | undefined;
let smtp: RunningSmtp | undefined;
afterEach(async () => {
  await smtp?.stop();
  smtp = undefined;
  await ctx?.close();
});

async function start(env: Record<string, string> = {}, before?: (c: TestContext) => Promise<void>) {
  ctx = await createTestContext(env);
  await before?.(ctx);
  smtp = await startSmtp(
    { ...ctx, log: createLogger({ level: "silent" }), metrics: createMetricsRegistry() },
    { smtpPort: 0, smtpsPort: 0 },
  );
  return { ctx, smtp };
}

describe("connection limits and timeouts", () => {
  it("refuses connections over the per-IP limit with 421 4.7.0", async () => {
    const { smtp: s } = await start({ SMTP_MAX_CONNECTIONS_PER_IP: "2" });
    const first = await RawSmtp.connect(s.ports.smtp);
    const second = await RawSmtp.connect(s.ports.smtp);
    const third = await RawSmtp.connect(s.ports.smtp);
    expect([third.banner.code, third.banner.enhanced]).toEqual([421, "4.7.0"]);
    expect(await third.client.waitClosed()).toBe(true);
    first.client.close();
    await new Promise((r) => setTimeout(r, 100));
    const fourth = await RawSmtp.connect(s.ports.smtp);
    expect(fourth.banner.code).toBe(220);
    second.client.close();
    fourth.client.close();
  });

  it("refuses connections over the total limit: 421 4.7.0 on the plain port, closed before TLS on SMTPS", async () => {
    const { smtp: s } = await start({ SMTP_MAX_CONNECTIONS: "1" });
    const first = await RawSmtp.connect(s.ports.smtp);
    // Nothing can be said before the handshake, and doing it to say 421 would cost what the cap saves.
    await expect(RawSmtp.connect(s.ports.smtps as number, { tls: true })).rejects.toThrow(/disconnected/);
    const second = await RawSmtp.connect(s.ports.smtp);
    expect([second.banner.code, second.banner.enhanced]).toEqual([421, "4.7.0"]);
    first.client.close();
  });

  it("closes an idle session with 421 4.4.2", async () => {
    const { smtp: s } = await start({ SMTP_IDLE_TIMEOUT: "1" });
    const { client } = await RawSmtp.connect(s.ports.smtp);
    const reply = await client.read(5_000);
    expect([reply.code, reply.enhanced]).toEqual([421, "4.4.2"]);
    expect(await client.waitClosed()).toBe(true);
  });
});

describe("graceful shutdown", () => {
  it("answers 421 to idle sessions and lets a message in DATA finish with 250", async () => {
    const { ctx: c, smtp: s } = await start();
    const { project, smtp: auth } = await createProjectFixture(c.db, c.config);
    const idle = await RawSmtp.session(s.ports.smtp, auth);
    const busy = await RawSmtp.session(s.ports.smtp, auth);
    busy.client.write("MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
    await busy.client.read();
    await busy.client.read();
    expect((await busy.client.read()).code).toBe(354);
    busy.client.write("From: app@example.com\r\nSubject: in flight\r\n\r\nfirst half\r\n");
    await new Promise((r) => setTimeout(r, 100));

    const stopped = s.stop();
    smtp = undefined;
    const idleReply = await idle.client.read();
    expect([idleReply.code, idleReply.enhanced]).toEqual([421, "4.3.2"]);
    expect(await idle.client.waitClosed()).toBe(true);
    // New connections are refused.
    await expect(RawSmtp.connect(s.ports.smtp)).rejects.toThrow();

    busy.client.write("second half\r\n.\r\n");
    const accepted = await busy.client.read();
    expect(accepted.code).toBe(250);
    const quit = await busy.client.command("QUIT");
    expect(quit.code).toBe(421);
    await stopped;
    expect(await c.db.message.count({ where: { projectId: project.id } })).toBe(1);
  });
});

describe("TLS certificate", () => {
  it("uses SMTP_TLS_CERT/SMTP_TLS_KEY and reloads them on SIGHUP without restart", async () => {
    const fingerprint = async (port: number) => {
      const { client } = await RawSmtp.connect(port, { tls: true });
      const socket = (client as unknown as { socket: TLSSocket }).socket;
      const value = socket.getPeerX509Certificate()?.fingerprint256;
      client.close();
      return value;
    };
    let certFile = "";
    const first = await selfSignedCertificate("first.test");
    const second = await selfSignedCertificate("second.test");
    const { smtp: s } = await start({}, async (c) => {
      certFile = join(c.dataDir, "cert.pem");
      await writeFile(certFile, first.cert);
      await writeFile(join(c.dataDir, "key.pem"), first.key);
      c.config.smtp.tlsCertFile = certFile;
      c.config.smtp.tlsKeyFile = join(c.dataDir, "key.pem");
    });
    const port = s.ports.smtps as number;
    expect(await fingerprint(port)).toBe(new X509Certificate(first.cert).fingerprint256);
    await writeFile(certFile, second.cert);
    await writeFile(join(ctx?.dataDir as string, "key.pem"), second.key);
    process.kill(process.pid, "SIGHUP");
    const expected = new X509Certificate(second.cert).fingerprint256;
    let seen: string | undefined;
    for (let i = 0; i < 50 && seen !== expected; i++) {
      await new Promise((r) => setTimeout(r, 50));
      seen = await fingerprint(port);
    }
    expect(seen).toBe(expected);
  });
});

describe("PROXY protocol", () => {
  it("takes the client address from the PROXY header when SMTP_PROXY_PROTOCOL is on", async () => {
    const { ctx: c, smtp: s } = await start({ SMTP_PROXY_PROTOCOL: "true" });
    const { smtp: auth } = await createProjectFixture(c.db, c.config);
    const { client, banner } = await RawSmtp.connect(s.ports.smtp, {
      firstBytes: "PROXY TCP4 203.0.113.9 127.0.0.1 40001 2525\r\n",
    });
    expect(banner.code).toBe(220);
    await client.command("EHLO client.test");
    await client.starttls();
    await client.command("EHLO client.test");
    expect((await client.authPlain(auth.username, "pst_secret_wrong")).code).toBe(535);
    client.close();
    for (let i = 0; i < 50; i++) {
      const events = await c.db.auditEvent.findMany({ where: { action: "auth.failure" } });
      if (events.length > 0) return expect(events[0]?.ip).toBe("203.0.113.9");
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error("no auth.failure audited");
  });

  it("holds SMTP_MAX_CONNECTIONS_PER_IP on the address of the PROXY header, not the proxy's", async () => {
    const { smtp: s } = await start({ SMTP_PROXY_PROTOCOL: "true", SMTP_MAX_CONNECTIONS_PER_IP: "1" });
    const proxied = (client: string) => ({ firstBytes: `PROXY TCP4 ${client} 127.0.0.1 40001 2525\r\n` });
    const first = await RawSmtp.connect(s.ports.smtp, proxied("203.0.113.9"));
    expect(first.banner.code).toBe(220);
    const again = await RawSmtp.connect(s.ports.smtp, proxied("203.0.113.9"));
    expect([again.banner.code, again.banner.enhanced]).toEqual([421, "4.7.0"]);
    const other = await RawSmtp.connect(s.ports.smtp, proxied("203.0.113.10"));
    expect(other.banner.code).toBe(220);
    first.client.close();
    other.client.close();
  });
});
