import { createDatabase, type Database, forEachRow, sqlPoolOf } from "@postern/db";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
let db: Database;
beforeAll(async () => {
  ctx = await createTestContext();
  db = createDatabase(ctx.databaseUrl, { max: 1 });
});
afterAll(async () => {
  await db.$disconnect();
  await ctx.close();
});

describe("forEachRow", () => {
  it("hands over every row in order, and gives its connection back", async () => {
    const pool = sqlPoolOf(db);
    const seen: number[] = [];
    await forEachRow<{ n: number }>(
      pool,
      { name: "rows-test", text: "SELECT n FROM generate_series(1, $1::int) AS n", values: [5] },
      (row) => seen.push(row.n),
    );
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    // The pool has one connection: the next statement would wait forever if it were still held.
    expect((await pool.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("rejects with what the row handler threw, after the statement ended, and the connection works", async () => {
    const pool = sqlPoolOf(db);
    let calls = 0;
    const outcome = forEachRow(pool, { text: "SELECT n FROM generate_series(1, 3) AS n" }, () => {
      calls++;
      throw new Error("cannot use this row");
    });
    await expect(outcome).rejects.toThrow("cannot use this row");
    expect(calls).toBe(1);
    expect((await pool.query("SELECT 2 AS two")).rows).toEqual([{ two: 2 }]);
  });

  it("rejects with PostgreSQL's error for a failing statement, and the pool recovers", async () => {
    const pool = sqlPoolOf(db);
    await expect(forEachRow(pool, { text: "SELECT 1 / 0" }, () => {})).rejects.toThrow("division by zero");
    expect((await pool.query("SELECT 3 AS three")).rows).toEqual([{ three: 3 }]);
  });
});
