import { createLogger } from "@postern/telemetry";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAuditBuffer } from "../src/audit-buffer";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

describe("audit buffer: events that repeat while a condition lasts", () => {
  it("writes one row per subject and window, and its count when the window ends; a new window gets a new row", async () => {
    const audit = createAuditBuffer(ctx.db, createLogger({ level: "silent" }));
    const entry = {
      action: "auth.blocked" as const,
      actor: "smtp",
      ip: "198.51.100.9",
      details: { scope: "ip" },
    };
    const until = Date.now() + 300;
    const recorded = Array.from({ length: 5 }, () =>
      audit.recordOncePerWindow("ip 198.51.100.9", until, entry),
    );
    expect(recorded).toEqual([true, false, false, false, false]);
    // Another subject has its own window.
    expect(audit.recordOncePerWindow("ip 198.51.100.10", until, { ...entry, ip: "198.51.100.10" })).toBe(
      true,
    );
    const rows = () => ctx.db.auditEvent.findMany({ where: { ip: "198.51.100.9" }, orderBy: { id: "asc" } });
    let counted = await rows();
    for (let i = 0; i < 100 && (counted[0]?.details as { attempts?: number })?.attempts !== 5; i++) {
      await new Promise((r) => setTimeout(r, 20));
      counted = await rows();
    }
    expect(counted.map((r) => r.details)).toEqual([{ scope: "ip", attempts: 5 }]);
    // The window has ended: the next attempt opens a new one.
    expect(audit.recordOncePerWindow("ip 198.51.100.9", Date.now() + 60_000, entry)).toBe(true);
    await audit.flush();
    expect((await rows()).map((r) => r.details)).toEqual([
      { scope: "ip", attempts: 5 },
      { scope: "ip", attempts: 1 },
    ]);
  });
});

describe("audit buffer: events written together", () => {
  it("writes the events recorded together; one that PostgreSQL refuses costs the others nothing", async () => {
    const audit = createAuditBuffer(ctx.db, createLogger({ level: "silent" }));
    const ip = "198.51.100.20";
    const event = (username: string) => ({
      action: "auth.failure" as const,
      actor: "smtp",
      ip,
      details: { username },
    });
    audit.record(event("first"));
    // jsonb cannot hold \u0000 (SQLSTATE 22P05): this row is refused, whatever batch it is in.
    audit.record(event("nul\u0000byte"));
    audit.record(event("third"));
    await audit.flush();
    const stored = await ctx.db.auditEvent.findMany({ where: { ip }, orderBy: { id: "asc" } });
    expect(stored.map((row) => row.details)).toEqual([{ username: "first" }, { username: "third" }]);
  });
});
