import { recordAudit, tailAudit } from "@postern/audit";
import type { AuditEvent } from "@postern/db";
import { createTestContext, type TestContext } from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

function follow(options: Partial<Parameters<typeof tailAudit>[1]> = {}) {
  const controller = new AbortController();
  const seen: AuditEvent[] = [];
  const running = (async () => {
    for await (const event of tailAudit(ctx.db, { intervalMs: 50, signal: controller.signal, ...options })) {
      seen.push(event);
    }
  })();
  return {
    seen,
    async stop() {
      controller.abort();
      await running;
    },
  };
}

describe("tailAudit", () => {
  it("does not lose an event whose lower id commits after a higher one", async () => {
    await recordAudit(ctx.db, { action: "auth.success", actor: "system" });
    const tail = follow();
    await new Promise((resolve) => setTimeout(resolve, 150));
    // A slow transaction takes the next id and stays open while a later one commits.
    const slow = new pg.Client({ connectionString: ctx.databaseUrl });
    await slow.connect();
    await slow.query("BEGIN");
    const { rows } = await slow.query(
      `INSERT INTO "AuditEvent" (actor, action, details) VALUES ('system', 'message.accepted', '{}') RETURNING id`,
    );
    const slowId = BigInt(rows[0].id);
    const fast = await recordAudit(ctx.db, { action: "message.delivered", actor: "system" });
    expect(fast.id).toBeGreaterThan(slowId);
    await expect.poll(() => tail.seen.map((e) => e.id)).toEqual([fast.id]);
    await slow.query("COMMIT");
    await slow.end();
    await expect.poll(() => tail.seen.map((e) => e.id)).toEqual([fast.id, slowId]);
    await tail.stop();
  });

  it("gives up on an id whose transaction rolled back, and keeps following", async () => {
    const tail = follow({ graceMs: 100, filter: { action: "message.failed" } });
    await new Promise((resolve) => setTimeout(resolve, 150));
    await ctx.db
      .$transaction(async (tx) => {
        await recordAudit(tx, { action: "message.failed", actor: "system" });
        throw new Error("roll back");
      })
      .catch(() => {});
    const kept = await recordAudit(ctx.db, { action: "message.failed", actor: "system" });
    await recordAudit(ctx.db, { action: "message.delivered", actor: "system" });
    await expect.poll(() => tail.seen.map((e) => e.id)).toEqual([kept.id]);
    await tail.stop();
  });

  it("follows across a wide jump in ids without watching every id in between", async () => {
    const tail = follow({ filter: { action: "auth.blocked" } });
    await new Promise((resolve) => setTimeout(resolve, 150));
    const { id } = await ctx.db.auditEvent.findFirstOrThrow({
      orderBy: { id: "desc" },
      select: { id: true },
    });
    const far = id + 50_000_000n;
    await ctx.db
      .$executeRaw`INSERT INTO "AuditEvent" (id, actor, action, details) VALUES (${far}, 'system', 'auth.blocked', '{}')`;
    await expect.poll(() => tail.seen.map((e) => e.id), { timeout: 2000 }).toEqual([far]);
    await tail.stop();
  });
});
