import { compactMessageStats } from "@postern/api";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer, insertMessage } from "./api-helpers";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

describe("compactMessageStats", () => {
  it("folds past hours' shards into one row per status without changing the counts", async () => {
    const project = await createProjectFixture(ctx.db, ctx.config);
    const old = new Date(Date.now() - 5 * 3_600_000);
    // Messages written over several connections land in several shards.
    const clients = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const client = new pg.Client({ connectionString: ctx.databaseUrl });
        await client.connect();
        return client;
      }),
    );
    for (const [i, client] of clients.entries()) {
      await client.query(
        `INSERT INTO "Message" (id, "projectId", "mailFrom", size, sha256, status, "createdAt", "updatedAt")
         SELECT gen_random_uuid(), $1, 'a@b.c', 1, 'x', 'delivered', $2, now() FROM generate_series(1, $3::int)`,
        [project.project.id, old, i + 1],
      );
      await client.end();
    }
    await insertMessage(ctx.db, project.project.id, { status: "queued" });
    const rows = () => ctx.db.messageStatsHour.findMany({ where: { projectId: project.project.id } });
    expect(new Set((await rows()).map((r) => r.shard)).size).toBeGreaterThan(1);
    const app = await apiFor(ctx);
    const stats = async () =>
      (await app.inject({ method: "GET", url: "/v1/stats", headers: bearer(project.apiToken.token) })).json()
        .counts;
    const before = await stats();
    expect(before).toMatchObject({ accepted: 11, delivered: 10, queued: 1 });

    await compactMessageStats(ctx.db, new Date(Date.now() - 2 * 3_600_000));
    const after = await rows();
    const oldRows = after.filter((r) => r.hour.getTime() < Date.now() - 2 * 3_600_000);
    expect(oldRows).toEqual([expect.objectContaining({ shard: 0, status: "delivered", count: 10 })]);
    expect(await stats()).toEqual(before);
    await app.close();
  });
});
