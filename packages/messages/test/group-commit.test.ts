import { sqlPoolOf, uuidv7 } from "@postern/db";
import { type AcceptedMessage, createGroupCommit, storeAcceptedMessages } from "@postern/messages";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;

beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(async () => {
  await ctx?.close();
});

/** A statement over items that fails whole with `code` while it holds more than one item. */
function failingWhenBatched(code: string) {
  const batches: number[][] = [];
  const run = async (items: number[]) => {
    batches.push(items);
    if (items.length > 1) throw Object.assign(new Error(`SQLSTATE ${code}`), { code });
    return items.map((item) => item * 10);
  };
  return { run, batches };
}

describe("one group commit, one classification of database errors", () => {
  for (const [code, what] of [
    ["22P05", "a data exception"],
    ["23503", "a constraint"],
    ["40P01", "a deadlock"],
  ] as const) {
    it(`a batch refused for ${what} (${code}) is rerun item by item`, async () => {
      const { run, batches } = failingWhenBatched(code);
      const commit = createGroupCommit(run, { maxItems: 10 });
      const results = await Promise.all([1, 2, 3].map((item) => commit.submit(item)));
      expect(results).toEqual([10, 20, 30]);
      expect(batches).toEqual([[1, 2, 3], [1], [2], [3]]);
    });
  }

  it("a batch failed by the connection or the server fails each caller, without reruns", async () => {
    const { run, batches } = failingWhenBatched("08006");
    const commit = createGroupCommit(run, { maxItems: 10 });
    const outcomes = await Promise.allSettled([1, 2].map((item) => commit.submit(item)));
    expect(outcomes.map((o) => o.status)).toEqual(["rejected", "rejected"]);
    expect(batches).toEqual([[1, 2]]);
  });

  it("the accept statement writes a message.accepted event per message in its one statement", async () => {
    const { project, smtp } = await createProjectFixture(ctx.db, ctx.config);
    const messages: AcceptedMessage[] = ["a", "b", "c"].map((name) => ({
      id: uuidv7(),
      projectId: project.id,
      credentialId: smtp.credentialId,
      actor: `smtp:${smtp.username}`,
      ip: "127.0.0.1",
      mailFrom: `${name}@example.com`,
      recipients: [`${name}1@example.net`, `${name}2@example.net`],
      bytes: Buffer.from(`Subject: ${name}\r\n\r\nbody\r\n`),
      headerMessageId: `<${name}@example.com>`,
      subject: name,
      status: "queued",
      deliveryJobId: uuidv7(),
    }));
    const pool = sqlPoolOf(ctx.db);
    let statements = 0;
    await storeAcceptedMessages(
      {
        query: ((query: never) => {
          statements++;
          return pool.query(query);
        }) as never,
      },
      messages,
    );
    expect(statements).toBe(1);
    const events = await ctx.db.messageEvent.findMany({
      where: { projectId: project.id },
      orderBy: { id: "asc" },
    });
    expect(events.map((e) => [e.messageId, e.type])).toEqual(messages.map((m) => [m.id, "message.accepted"]));
    expect(events[0]?.data).toEqual({
      mailFrom: "a@example.com",
      recipients: ["a1@example.net", "a2@example.net"],
      size: messages[0]?.bytes.length,
      headerMessageId: "<a@example.com>",
    });
    // One transaction wrote them all.
    expect(new Set(events.map((e) => e.txId)).size).toBe(1);
  });
});
