import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { type AddressInfo, createServer, connect as netConnect, type Socket } from "node:net";
import { resolve } from "node:path";
import { type ConnectionOptions, connect as tlsConnect } from "node:tls";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createMetricsRegistry, type Registry } from "@postern/telemetry";
import { captureLog, createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

/**
 * The front door's limits and deadlines (docs/security.md, Limits and deadlines): connection caps
 * and the handshake deadline held at TCP accept, before TLS; the deadlines of an unauthenticated
 * session and of DATA; the hard error limit; the TLS configuration. One server for the file, its
 * limits set low; the 5,000-connection flood runs against a `postern start smtp` process of its
 * own, whose descriptors are counted in /proc.
 */

const handshakeSeconds = 2;
const authDeadlineSeconds = 5;
const dataDeadlineSeconds = 2;
const maxConnections = 40;
const maxConnectionsPerIp = 10;

let ctx: TestContext;
let smtp: RunningSmtp;
let metrics: Registry;
/** Everything the SMTP role logged, at debug level. */
let captured = captureLog("debug");

beforeAll(async () => {
  ctx = await createTestContext({
    SMTP_MAX_CONNECTIONS: String(maxConnections),
    SMTP_MAX_CONNECTIONS_PER_IP: String(maxConnectionsPerIp),
    SMTP_TLS_HANDSHAKE_TIMEOUT: String(handshakeSeconds),
    SMTP_AUTH_DEADLINE: String(authDeadlineSeconds),
    SMTP_DATA_DEADLINE: String(dataDeadlineSeconds),
  });
  metrics = createMetricsRegistry();
  captured = captureLog("debug");
  smtp = await startSmtp({ ...ctx, log: captured.log, metrics }, { smtpPort: 0, smtpsPort: 0 });
});

afterAll(async () => {
  await smtp?.stop();
  await ctx?.close();
});

const smtpsPort = () => smtp.ports.smtps as number;

/** A TCP connection that never says anything, from `localAddress` (another loopback address is another client). */
function silentConnection(port: number, localAddress = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolveSocket, reject) => {
    const socket = netConnect({ port, host: "127.0.0.1", localAddress });
    socket.on("error", () => {});
    socket.once("connect", () => resolveSocket(socket));
    socket.once("close", () => reject(new Error("closed before connecting")));
  });
}

/** Milliseconds until `socket` is closed by the server, or undefined after `withinMs`. */
function closedAfter(socket: Socket, withinMs: number): Promise<number | undefined> {
  const started = Date.now();
  if (socket.destroyed) return Promise.resolve(0);
  return new Promise((done) => {
    const timer = setTimeout(() => done(undefined), withinMs);
    socket.once("close", () => {
      clearTimeout(timer);
      done(Date.now() - started);
    });
  });
}

/** Waits until the listeners hold `count` connections (counted at accept, before any TLS). */
async function connectionsOpen(count: number) {
  const gauge = metrics.getSingleMetric("postern_smtp_connections_open");
  for (let i = 0; i < 250; i++) {
    const value = (await gauge?.get())?.values[0]?.value;
    if (value === count) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`connections open never reached ${count}`);
}

/** A TLS client on the SMTPS port from `localAddress`: resolves "secure", or the error's message. */
function tlsOutcome(localAddress: string): Promise<string> {
  return new Promise((done) => {
    const options = { port: smtpsPort(), host: "127.0.0.1", localAddress, rejectUnauthorized: false };
    const socket = tlsConnect(options as ConnectionOptions);
    socket.once("secureConnect", () => {
      socket.destroy();
      done("secure");
    });
    socket.once("error", (error) => done(error.message));
  });
}

describe("connections, before TLS", () => {
  it("closes an SMTPS connection that sends no ClientHello at SMTP_TLS_HANDSHAKE_TIMEOUT, not at the idle timeout", async () => {
    const socket = await silentConnection(smtpsPort());
    let received = 0;
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    const after = await closedAfter(socket, 20_000);
    expect(after).toBeDefined();
    expect(after).toBeGreaterThanOrEqual(handshakeSeconds * 1000 - 500);
    expect(received).toBe(0);
    await connectionsOpen(0);
  });

  it("holds the per-address cap at accept, counting handshakes in progress, on both ports", async () => {
    const address = "127.0.0.2";
    const held = await Promise.all(
      Array.from({ length: maxConnectionsPerIp }, () => silentConnection(smtpsPort(), address)),
    );
    await connectionsOpen(maxConnectionsPerIp);
    // Over the cap on SMTPS: closed at once, no handshake (nothing can be said before TLS).
    const started = Date.now();
    expect(await tlsOutcome(address)).toMatch(/disconnected|ECONNRESET/);
    expect(Date.now() - started).toBeLessThan(handshakeSeconds * 1000);
    // Over the cap on the plain port: 421 4.7.0, then closed.
    const plain = await RawSmtp.connect(smtp.ports.smtp, { localAddress: address });
    expect([plain.banner.code, plain.banner.enhanced]).toEqual([421, "4.7.0"]);
    expect(await plain.client.waitClosed()).toBe(true);
    // Another address is not affected.
    const other = await RawSmtp.connect(smtp.ports.smtp, { localAddress: "127.0.0.3" });
    expect(other.banner.code).toBe(220);
    other.client.close();
    for (const socket of held) socket.destroy();
    await connectionsOpen(0);
  });

  it("holds the total cap at accept: 421 4.7.0 on the plain port, closed before TLS on SMTPS", async () => {
    const addresses = ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"];
    const held = await Promise.all(
      addresses.flatMap((address) =>
        Array.from({ length: maxConnections / addresses.length }, () =>
          silentConnection(smtpsPort(), address),
        ),
      ),
    );
    await connectionsOpen(maxConnections);
    expect(await tlsOutcome("127.0.0.8")).toMatch(/disconnected|ECONNRESET/);
    const plain = await RawSmtp.connect(smtp.ports.smtp, { localAddress: "127.0.0.8" });
    expect([plain.banner.code, plain.banner.enhanced]).toEqual([421, "4.7.0"]);
    for (const socket of held) socket.destroy();
    await connectionsOpen(0);
    const { client, banner } = await RawSmtp.connect(smtp.ports.smtp, { localAddress: "127.0.0.8" });
    expect(banner.code).toBe(220);
    client.close();
  });

  it("closes a session whose TLS handshake after STARTTLS does not finish at SMTP_TLS_HANDSHAKE_TIMEOUT", async () => {
    const { client } = await RawSmtp.connect(smtp.ports.smtp);
    await client.command("EHLO client.test");
    const ready = await client.command("STARTTLS");
    expect(ready.code).toBe(220);
    // No ClientHello follows.
    const started = Date.now();
    expect(await client.waitClosed((authDeadlineSeconds + 10) * 1000)).toBe(true);
    const after = Date.now() - started;
    expect(after).toBeGreaterThanOrEqual(handshakeSeconds * 1000 - 500);
    // The handshake deadline, not the (later) authentication deadline.
    expect(after).toBeLessThan(authDeadlineSeconds * 1000);
  });
});

describe("deadlines and the error limit", () => {
  it("ends a session not authenticated by SMTP_AUTH_DEADLINE with 421 4.4.2, however steadily it sends", async () => {
    const started = Date.now();
    const { client } = await RawSmtp.connect(smtp.ports.smtp);
    await client.command("EHLO client.test");
    // One byte at a time of a line that never ends: every byte resets the idle timeout.
    const trickle = setInterval(() => client.write("N"), 250);
    try {
      const reply = await client.read((authDeadlineSeconds + 10) * 1000);
      expect([reply.code, reply.enhanced]).toEqual([421, "4.4.2"]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(authDeadlineSeconds * 1000 - 500);
      expect(await client.waitClosed()).toBe(true);
    } finally {
      clearInterval(trickle);
    }
  });

  it("ends a DATA phase not complete by SMTP_DATA_DEADLINE with 421 4.4.2, and stores nothing", async () => {
    const { project, smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    expect((await client.command("RCPT TO:<someone@example.org>")).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    const started = Date.now();
    client.write("From: app@example.com\r\nSubject: slow\r\n\r\n");
    const trickle = setInterval(() => client.write("a"), 200);
    try {
      const reply = await client.read((dataDeadlineSeconds + 10) * 1000);
      expect([reply.code, reply.enhanced]).toEqual([421, "4.4.2"]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(dataDeadlineSeconds * 1000 - 500);
      expect(await client.waitClosed()).toBe(true);
    } finally {
      clearInterval(trickle);
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(await ctx.db.message.count({ where: { projectId: project.id } })).toBe(0);
    // A session ended in DATA is not a store failure.
    expect(captured.text()).not.toContain("DATA failed");
  });

  it("ends the session with 421 4.7.0 at the 20th refused command: 21 bad RCPTs", async () => {
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    client.write("RCPT TO:<nobody@localhost>\r\n".repeat(21));
    const codes: number[] = [];
    let last = await client.read();
    while (last.code !== 421) {
      codes.push(last.code);
      last = await client.read();
    }
    expect(codes).toEqual(Array(20).fill(553));
    expect([last.code, last.enhanced]).toEqual([421, "4.7.0"]);
    expect(await client.waitClosed()).toBe(true);
  });

  it("counts refusals again from zero after a message is accepted", async () => {
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
    const refuse = async (count: number) => {
      client.write("RCPT TO:<nobody@localhost>\r\n".repeat(count));
      for (let i = 0; i < count; i++) expect((await client.read()).code).toBe(553);
    };
    await client.command("MAIL FROM:<app@example.com>");
    await refuse(15);
    expect((await client.command("RCPT TO:<someone@example.org>")).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    expect((await client.command("From: app@example.com\r\nSubject: hi\r\n\r\nhi\r\n.")).code).toBe(250);
    await client.command("MAIL FROM:<app@example.com>");
    await refuse(15);
    expect((await client.command("NOOP")).code).toBe(250);
    client.close();
  });
});

/** openssl s_client against a listener; resolves its exit code and output. */
function sClient(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    const child = execFile(
      "/usr/bin/openssl",
      ["s_client", "-brief", ...args],
      { timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        done({ code, output: `${stdout}\n${stderr}` });
      },
    );
    child.stdin?.end("QUIT\r\n");
  });
}

describe("TLS configuration: Mozilla intermediate (TLS 1.3; TLS 1.2 with ECDHE and AEAD only)", () => {
  const smtps = () => ["-connect", `127.0.0.1:${smtpsPort()}`];
  const starttls = () => ["-starttls", "smtp", "-connect", `127.0.0.1:${smtp.ports.smtp}`];

  it("refuses `openssl s_client -cipher AES128-SHA -tls1_2`, and other non-forward-secret or CBC suites, on SMTPS and STARTTLS", async () => {
    for (const listener of [smtps(), starttls()]) {
      for (const cipher of [
        "AES128-SHA",
        "AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA384",
      ]) {
        const { code, output } = await sClient([...listener, "-tls1_2", "-cipher", cipher]);
        expect({ cipher, code }).toEqual({ cipher, code: 1 });
        expect(output).toMatch(/handshake failure|alert/);
      }
    }
  });

  it("accepts TLS 1.2 with ECDHE and an AEAD cipher, and TLS 1.3, on SMTPS and STARTTLS", async () => {
    for (const listener of [smtps(), starttls()]) {
      for (const cipher of [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
      ]) {
        const { code, output } = await sClient([...listener, "-tls1_2", "-cipher", cipher]);
        expect({ cipher, code }).toEqual({ cipher, code: 0 });
        expect(output).toContain(`Ciphersuite: ${cipher}`);
      }
      const { code, output } = await sClient([...listener, "-tls1_3"]);
      expect(code).toBe(0);
      expect(output).toContain("Protocol version: TLSv1.3");
    }
  });

  it("logs a failed handshake at debug, without a stack", async () => {
    const before = captured.text().length;
    await sClient([...smtps(), "-tls1_2", "-cipher", "AES128-SHA"]);
    for (let i = 0; i < 100 && !captured.text().slice(before).includes("TLS handshake failed"); i++)
      await new Promise((r) => setTimeout(r, 20));
    const lines = captured
      .text()
      .slice(before)
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as { level: number; msg: string; err?: unknown; stack?: unknown });
    const failures = lines.filter((line) => line.msg === "TLS handshake failed");
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.every((line) => line.level === 20)).toBe(true);
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    expect(captured.text().slice(before)).not.toContain('"stack"');
  });
});

describe("5,000 silent connections to SMTPS", () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    child?.kill("SIGKILL");
  });

  /** `postern start smtp` as its own process; resolves with its ports once it listens. */
  async function startPostern(env: Record<string, string>): Promise<{ smtp: number; smtps: number }> {
    const bin = resolve(import.meta.dirname, "../../cli/bin/postern.js");
    // SMTPS_PORT=0 turns SMTPS off: a port free a moment ago.
    const smtpsPort = await new Promise<number>((done) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => done(port));
      });
    });
    child = spawn(process.execPath, [bin, "start", "smtp"], {
      env: {
        ...process.env,
        ...ctx.env,
        SMTP_PORT: "0",
        SMTPS_PORT: String(smtpsPort),
        HTTP_PORT: "0",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return new Promise((resolvePorts, reject) => {
      let output = "";
      child?.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const plain = /SMTP\s+\S+:(\d+)/.exec(output)?.[1];
        const secure = /SMTPS\s+\S+:(\d+)/.exec(output)?.[1];
        if (plain && secure) resolvePorts({ smtp: Number(plain), smtps: Number(secure) });
      });
      child?.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child?.once("exit", (code) => reject(new Error(`postern exited with ${code}: ${output}`)));
    });
  }

  const descriptors = () => readdirSync(`/proc/${child?.pid}/fd`).length;

  it("a normal client still sends over SMTPS, and the server's descriptors stay within the connection cap", async () => {
    const cap = 300;
    const perIp = 100;
    const ports = await startPostern({
      SMTP_MAX_CONNECTIONS: String(cap),
      SMTP_MAX_CONNECTIONS_PER_IP: String(perIp),
      SMTP_TLS_HANDSHAKE_TIMEOUT: "5",
      LOG_LEVEL: "warn",
    });
    let logged = "";
    child?.stdout?.on("data", (chunk: Buffer) => {
      logged += chunk.toString();
    });
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const send = async (subject: string) => {
      const started = performance.now();
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port: ports.smtps,
        secure: true,
        name: "client.test",
        auth: { user: auth.username, pass: auth.password },
        tls: { rejectUnauthorized: false },
      });
      const info = await transport.sendMail({
        from: "app@example.com",
        to: "someone@example.org",
        subject,
        text: "hi",
      });
      transport.close();
      return { response: info.response, ms: performance.now() - started };
    };
    // Opens the database and Redis connections a message needs before the baseline is taken.
    const alone = await send("warm-up");
    expect(alone.response).toMatch(/^250 /);
    const baseline = descriptors();
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, descriptors());
    }, 10);

    // 5,000 connections that never send a ClientHello, from two client addresses (the normal
    // client is a third), 250 at a time.
    const silent: Socket[] = [];
    let attempted = 0;
    const flood = (async () => {
      for (let batch = 0; batch < 20; batch++) {
        const opened = await Promise.allSettled(
          Array.from({ length: 250 }, (_, i) =>
            silentConnection(ports.smtps, i % 2 === 0 ? "127.0.0.2" : "127.0.0.3"),
          ),
        );
        attempted += opened.length;
        for (const result of opened) if (result.status === "fulfilled") silent.push(result.value);
      }
    })();
    while (attempted < 1_000) await new Promise((r) => setTimeout(r, 10));
    const normal = await send("during the flood");
    await flood;
    clearInterval(sampler);
    peak = Math.max(peak, descriptors());
    console.log(
      `5,000 silent SMTPS connections: normal client's connect-to-250 ${normal.ms.toFixed(0)} ms ` +
        `(${alone.ms.toFixed(0)} ms before the flood, the first message of the process); ` +
        `server descriptors ${baseline} before, peak ${peak}, cap ${cap}`,
    );
    expect(normal.response).toMatch(/^250 2\.0\.0 /);
    expect(attempted).toBe(5_000);
    // Each address holds at most its cap; the rest were closed at accept.
    expect(peak - baseline).toBeLessThanOrEqual(2 * perIp + 20);
    expect(peak - baseline).toBeLessThanOrEqual(cap + 20);
    // Those admitted are closed by the handshake deadline, however long the client waits.
    const closed = await Promise.all(silent.map((socket) => closedAfter(socket, 30_000)));
    expect(closed.filter((after) => after === undefined)).toEqual([]);
    for (let i = 0; i < 100 && descriptors() > baseline + 5; i++) await new Promise((r) => setTimeout(r, 50));
    expect(descriptors()).toBeLessThanOrEqual(baseline + 5);
    // Handshake failures are not warnings.
    expect(logged).toBe("");
  }, 120_000);
});
