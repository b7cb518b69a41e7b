import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDatabase, migrate } from "@postern/db";
import { startEmbeddedPostgres, startEmbeddedRedis } from "@postern/embedded";
import { createRedis } from "@postern/queue";
import { startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawSmtp } from "./smtp-client";

let ctx: TestContext;
let root: string;
beforeAll(async () => {
  ctx = await createTestContext();
  root = await mkdtemp(join(tmpdir(), "postern-outage-"));
  await chmod(root, 0o755);
});
afterAll(async () => {
  await ctx.close();
  await rm(root, { recursive: true, force: true });
});

const silent = () => ({ log: createLogger({ level: "silent" }), metrics: createMetricsRegistry() });

async function openTransaction(port: number, auth: { username: string; password: string }) {
  const { client, auth: reply } = await RawSmtp.session(port, auth);
  expect(reply?.code).toBe(235);
  expect((await client.command("MAIL FROM:<app@example.com>")).code).toBe(250);
  return client;
}

describe("backing store unavailable", () => {
  it("Redis down: RCPT gets 451 4.3.0 (never an unchecked accept), AUTH gets 454 4.3.0", async () => {
    const redisServer = await startEmbeddedRedis({ dir: join(root, "redis"), ephemeral: true });
    const redis = createRedis(redisServer.url);
    redis.on("error", () => {});
    const { smtp: auth } = await createProjectFixture(ctx.db, ctx.config);
    const smtp = await startSmtp({ ...ctx, redis, ...silent() }, { smtpPort: 0 });
    try {
      const client = await openTransaction(smtp.ports.smtp, auth);
      await redisServer.stop();
      const rcpt = await client.command("RCPT TO:<a@example.org>");
      expect([rcpt.code, rcpt.enhanced]).toEqual([451, "4.3.0"]);
      client.close();
      // A new AUTH that is not cached cannot be checked against the failure limiter.
      const other = await createProjectFixture(ctx.db, ctx.config);
      const { client: second, auth: reply } = await RawSmtp.session(smtp.ports.smtp, other.smtp);
      expect([reply?.code, reply?.enhanced]).toEqual([454, "4.3.0"]);
      second.close();
      expect(await ctx.db.message.count()).toBe(0);
    } finally {
      await smtp.stop();
      redis.disconnect();
    }
  });

  it("PostgreSQL down: end of DATA gets 451 4.3.0 and the quota is given back", async () => {
    const postgres = await startEmbeddedPostgres({ dir: join(root, "postgres"), ephemeral: true });
    await migrate(postgres.url);
    const db = createDatabase(postgres.url, { max: 2 });
    const fixture = await createProjectFixture(db, ctx.config, { quotaPerMinute: 1 });
    const smtp = await startSmtp({ ...ctx, db, ...silent() }, { smtpPort: 0 });
    try {
      const client = await openTransaction(smtp.ports.smtp, fixture.smtp);
      expect((await client.command("RCPT TO:<a@example.org>")).code).toBe(250);
      await postgres.stop();
      expect((await client.command("DATA")).code).toBe(354);
      client.write("From: app@example.com\r\nSubject: lost?\r\n\r\nbody\r\n.\r\n");
      const reply = await client.read();
      expect([reply.code, reply.enhanced]).toEqual([451, "4.3.0"]);
      client.close();
      const { createProjectQuota } = await import("@postern/quota");
      const usage = await createProjectQuota(ctx.redis, ctx.redisKeyPrefix).usage(fixture.project);
      expect(usage.perMinute.used).toBe(0);
    } finally {
      await smtp.stop();
      await db.$disconnect().catch(() => {});
    }
  });
});
