import { buildApi } from "@postern/api";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { measureStatsEndpoint, seedMessages } from "../stats";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

describe("seeding messages for the stats measurement", () => {
  it("stores valid Message rows of the project, every status, with completion times where due", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    await seedMessages(ctx.db, project.id, 1000);

    const byStatus = await ctx.db.message.groupBy({
      by: ["status"],
      where: { projectId: project.id },
      _count: true,
    });
    expect(Object.fromEntries(byStatus.map((g) => [g.status, g._count]))).toEqual({
      queued: 250,
      deferred: 250,
      delivered: 250,
      failed: 250,
    });
    expect(await ctx.db.message.count({ where: { status: "delivered", deliveredAt: null } })).toBe(0);
    expect(
      await ctx.db.message.count({ where: { status: { in: ["delivered", "failed"] }, completedAt: null } }),
    ).toBe(0);
    expect(
      await ctx.db.message.count({
        where: { status: { in: ["queued", "deferred"] }, completedAt: { not: null } },
      }),
    ).toBe(0);
    const oldest = await ctx.db.message.findFirst({ orderBy: { createdAt: "asc" } });
    expect(Date.now() - (oldest?.createdAt.getTime() ?? 0)).toBeLessThanOrEqual(7 * 24 * 3600 * 1000);
  });
});

describe("--seed-messages", () => {
  it("times GET /v1/stats and the dashboard messages page's first data over the seeded rows", async () => {
    const fixture = await createProjectFixture(ctx.db, ctx.config);
    const api = await buildApi({
      config: ctx.config,
      db: ctx.db,
      redis: ctx.redis,
      log: createLogger({ level: "silent" }),
      metrics: createMetricsRegistry(),
    });
    try {
      const url = new URL(await api.listen({ host: "127.0.0.1", port: 0 }));
      const report = await measureStatsEndpoint(
        {
          httpPort: Number(url.port),
          apiToken: fixture.apiToken.token,
          db: ctx.db,
          projectId: fixture.project.id,
        },
        200,
        3,
      );
      expect(report.skipped).toBeUndefined();
      expect(report.latencyMs?.count).toBe(3);
      expect(report.messagesPage).toEqual({ latencyMs: expect.objectContaining({ count: 3 }) });
    } finally {
      await api.close();
    }
  });
});
