import { createTestContext, type TestContext } from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { uuidv7 } from "../src/ids";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

it("makes UUIDv7s that PostgreSQL reads back as version 7, RFC variant, with their millisecond", async () => {
  const at = Date.UTC(2026, 10, 22, 15, 30, 0, 123);
  const ids = Array.from({ length: 1_000 }, () => uuidv7(at));
  expect(new Set(ids).size).toBe(ids.length);
  const client = new pg.Client({ connectionString: ctx.databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ version: number; variant: boolean; ms: string }>(
      `SELECT uuid_extract_version(id) AS version,
              substr(id::text, 20, 1) IN ('8', '9', 'a', 'b') AS variant,
              (extract(epoch FROM uuid_extract_timestamp(id)) * 1000)::bigint::text AS ms
       FROM unnest($1::uuid[]) AS id`,
      [ids],
    );
    expect(new Set(rows.map((r) => `${r.version} ${r.variant} ${r.ms}`))).toEqual(new Set([`7 true ${at}`]));
  } finally {
    await client.end();
  }
});

it("orders ids by the time they were made in", () => {
  const times = [0, 1, 255, 256, 2 ** 32, Date.now(), 2 ** 48 - 1];
  const ids = times.map((t) => uuidv7(t));
  expect([...ids].sort()).toEqual(ids);
  expect(ids[0]?.startsWith("00000000-0000-7")).toBe(true);
});
