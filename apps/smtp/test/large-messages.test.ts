import { createHash, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { sqlPoolOf } from "@postern/db";
import { createDeliveryProducer, type DeliveryProducer } from "@postern/queue";
import { createAcceptor, type MessageToAccept, type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, SmtpSink, type TestContext } from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDataBudget } from "../src/data-budget";
import { readMessageData } from "../src/message";
import { RawSmtp } from "./smtp-client";

/**
 * Large messages on their way through: the largest message the front door takes (MAX_MESSAGE_SIZE,
 * left at its default) is stored and relayed byte for byte, and large messages being written do
 * not hold up the small ones behind them (docs/smtp.md, Large messages).
 */

let ctx: TestContext;
let smtp: RunningSmtp;
let worker: RunningWorker;
let upstream: SmtpSink;
let producer: DeliveryProducer;
const log = createLogger({ level: "silent" });

beforeAll(async () => {
  ctx = await createTestContext();
  smtp = await startSmtp({ ...ctx, log, metrics: createMetricsRegistry() }, { smtpPort: 0, smtpsPort: 0 });
  worker = await startWorker({ ...ctx, log, metrics: createMetricsRegistry() });
  upstream = await SmtpSink.start();
  producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
});

afterAll(async () => {
  await smtp?.stop();
  await worker?.stop();
  await upstream?.stop();
  await producer?.close();
  await ctx?.close();
});

/** A message of exactly `size` bytes: headers, then 76-character lines of base64-like text, CRLF-ended. */
function messageOfSize(size: number, subject: string): Buffer {
  const head = `From: app@example.com\r\nTo: a@example.org\r\nSubject: ${subject}\r\n\r\n`;
  const line = `${"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0"}\r\n`;
  const bytes = Buffer.alloc(size, line);
  bytes.write(head, 0);
  // The body's lines start after the headers; the last one is cut to end the message on CRLF.
  bytes.fill(line, head.length, size - 2);
  bytes.write("\r\n", size - 2);
  return bytes;
}

async function sendData(auth: { username: string; password: string }, content: Buffer) {
  const { client } = await RawSmtp.session(smtp.ports.smtp, auth);
  try {
    expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
    expect((await client.command("RCPT TO:<a@example.org>")).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    client.write(content);
    client.write(".\r\n");
    return await client.read(120_000);
  } finally {
    client.close();
  }
}

describe("large messages", () => {
  it("accepts a message of MAX_MESSAGE_SIZE bytes, stores it once and relays the stored bytes unchanged; one byte more is refused", async () => {
    const maxSize = ctx.config.smtp.maxMessageSize;
    expect(maxSize).toBe(26_214_400);
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url });
    const content = messageOfSize(maxSize, "largest");

    const reply = await sendData(auth, content);
    expect(reply.code).toBe(250);
    const id = /queued as ([0-9a-f-]{36})$/.exec(reply.text)?.[1] as string;
    await upstream.waitFor(1, 120_000);
    const [arrived] = upstream.messages;
    const stored = await ctx.db.messageBody.findUniqueOrThrow({ where: { messageId: id } });
    const storedBytes = Buffer.from(stored.data);
    // Postern's Received header, then the client's bytes as sent.
    expect(storedBytes.toString("latin1", 0, 15)).toBe("Received: from ");
    expect(storedBytes.length).toBeLessThan(maxSize + 1_000);
    expect(storedBytes.subarray(storedBytes.length - maxSize).equals(content)).toBe(true);
    expect(arrived?.raw.equals(storedBytes)).toBe(true);
    // Streamed apart from its message's row, in the same transaction, stamped with the same instant.
    const row = await ctx.db.message.findUniqueOrThrow({ where: { id } });
    expect(stored.createdAt).toEqual(row.createdAt);
    expect(row.size).toBe(storedBytes.length);
    await expect
      .poll(async () => (await ctx.db.message.findUniqueOrThrow({ where: { id } })).status, {
        timeout: 30_000,
      })
      .toBe("delivered");

    const over = await sendData(auth, messageOfSize(maxSize + 1, "too large"));
    expect([over.code, over.enhanced]).toEqual([552, "5.3.4"]);
  }, 300_000);

  it("reads a message larger than the memory reserved for one, every byte in order", async () => {
    // 70 MiB: past the 64 MiB of address space a message's buffer starts with, so it moves once.
    const chunk = (i: number) => Buffer.alloc(16_384, `line ${i} of the message\r\n`);
    const chunks = 70 * 64;
    const sent = createHash("sha256").update("P:");
    const data = await readMessageData(
      Readable.from(
        (function* () {
          for (let i = 0; i < chunks; i++) {
            const next = chunk(i);
            sent.update(next);
            yield next;
          }
        })(),
      ),
      Buffer.from("P:"),
      createDataBudget(1 << 20).holder(),
      "reject",
    );
    expect(data.ok).toBe(true);
    if (!data.ok) return;
    expect(data.bytes.length).toBe(2 + chunks * 16_384);
    expect(createHash("sha256").update(data.bytes).digest("hex")).toBe(sent.digest("hex"));
    // Once stored, its memory is given back there and then, not at some later collection.
    data.release();
    expect(data.bytes.length).toBe(0);
  }, 60_000);

  it("stores a large resubmission within the window as a duplicate, without a second body", async () => {
    const { project, smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const bytes = messageOfSize(1024 * 1024, "twice");
    const submission = (): MessageToAccept => ({
      id: randomUUID(),
      client: {
        credentialId: auth.credentialId,
        key: auth.username,
        project: { ...project, senderDomains: [], verifiedDomains: [] },
      },
      ip: "192.0.2.10",
      mailFrom: "app@example.com",
      recipients: ["a@example.org"],
      bytes,
      headers: { messageId: undefined, subject: "twice", from: ["app@example.com"], fromFields: 1 },
      duplicates: { fingerprint: createHash("sha256").update(bytes).digest("hex"), windowSeconds: 3600 },
    });
    const acceptor = createAcceptor({ sql: sqlPoolOf(ctx.db), producer, log });
    const first = submission();
    expect(await acceptor.accept(first)).toEqual({ ok: true, value: { duplicateOf: undefined } });
    expect(await acceptor.accept(submission())).toEqual({ ok: true, value: { duplicateOf: first.id } });
    await acceptor.settled();
    const bodies = await ctx.db.messageBody.findMany({ where: { message: { projectId: project.id } } });
    expect(bodies.map((b) => [b.messageId, Buffer.from(b.data).equals(bytes)])).toEqual([[first.id, true]]);
    expect(
      await ctx.db.auditEvent.count({ where: { projectId: project.id, action: "message.duplicate" } }),
    ).toBe(1);
  });

  it("writes a small message while large ones are still being written", async () => {
    const { project: large, smtp: largeAuth } = await createProjectFixture(ctx.db, ctx.config);
    const { project: small, smtp: smallAuth } = await createProjectFixture(ctx.db, ctx.config);
    const toAccept = (project: typeof large, auth: typeof largeAuth, size: number): MessageToAccept => ({
      id: randomUUID(),
      client: {
        credentialId: auth.credentialId,
        key: auth.username,
        project: { ...project, senderDomains: [], verifiedDomains: [] },
      },
      ip: "192.0.2.10",
      mailFrom: "app@example.com",
      recipients: ["a@example.org"],
      bytes: messageOfSize(size, "m"),
      headers: { messageId: undefined, subject: "m", from: ["app@example.com"], fromFields: 1 },
    });
    const acceptor = createAcceptor({ sql: sqlPoolOf(ctx.db), producer, log });

    // Another transaction locks the large messages' project: writing them waits on it (their
    // rows' foreign key), for as long as the test holds it, as a slow write of many MiB would.
    const lock = await sqlPoolOf(ctx.db).connect();
    await lock.query("BEGIN");
    await lock.query(`SELECT 1 FROM "Project" WHERE "id" = $1 FOR UPDATE`, [large.id]);
    const writing = [1, 2].map(() => acceptor.accept(toAccept(large, largeAuth, 1024 * 1024)));
    try {
      let largeDone = false;
      void Promise.all(writing).then(() => (largeDone = true));
      // Two large messages are being written: as many as the batches' statements in flight. Each
      // first receives its 1 MiB over COPY: on a loaded machine that takes seconds.
      await expect
        .poll(
          async () => {
            const { rows } = await lock.query(
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
            );
            return rows[0].n;
          },
          { timeout: 30_000 },
        )
        .toBe(2);

      const outcome = await Promise.race([
        acceptor.accept(toAccept(small, smallAuth, 10_000)),
        new Promise((resolve) => setTimeout(resolve, 20_000, "still waiting")),
      ]);
      expect(outcome).toEqual({ ok: true, value: { duplicateOf: undefined } });
      expect(await ctx.db.message.count({ where: { projectId: small.id } })).toBe(1);
      expect(largeDone).toBe(false);
    } finally {
      await lock.query("ROLLBACK");
      lock.release();
    }
    expect((await Promise.all(writing)).every((o) => o.ok)).toBe(true);
    await acceptor.settled();
    expect(await ctx.db.message.count({ where: { projectId: large.id } })).toBe(2);
  }, 60_000);
});
