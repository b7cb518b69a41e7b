import { randomUUID } from "node:crypto";
import { type MessageStatus, sqlPoolOf } from "@postern/db";
import { createDeliveryQueue } from "@postern/queue";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type TestContext,
} from "@postern/testkit";
import { sweep } from "@postern/worker";
import { afterAll, beforeAll, expect, it } from "vitest";
import { producerFor } from "./running";

/* The sweeper and the statuses that are never delivered: held, denied, sandboxed. */

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ BODY_RETENTION_DAYS: "7" });
});
afterAll(() => ctx?.close());

function sweeperDeps() {
  return {
    config: ctx.config,
    sql: sqlPoolOf(ctx.db),
    redis: ctx.redis,
    queue: createDeliveryQueue(ctx.redis, ctx.redisKeyPrefix),
    producer: producerFor(ctx),
  };
}

it("never enqueues held, denied or sandboxed messages; prunes old bodies of denied and sandboxed ones, never of held ones", async () => {
  const { project } = await createProjectFixture(ctx.db, ctx.config);
  const hourAgo = new Date(Date.now() - 3_600_000);
  const monthAgo = new Date(Date.now() - 30 * 86_400_000);
  const byStatus = new Map<MessageStatus, string>();
  for (const status of ["held", "denied", "sandboxed"] as const) {
    const message = await createQueuedMessageFixture(ctx.db, project);
    await ctx.db.message.update({ where: { id: message.id }, data: { status, createdAt: hourAgo } });
    await ctx.db.messageBody.update({ where: { messageId: message.id }, data: { createdAt: monthAgo } });
    byStatus.set(status, message.id);
  }
  const deps = sweeperDeps();
  try {
    const result = await sweep(deps, new Date(Date.now() + 60_000));
    expect(result.requeued).toBe(0);
    expect(result.prunedBodies).toBe(2);
    // The default hold time (a day) has not passed.
    expect(result.expiredHolds).toEqual({ approved: 0, denied: 0 });
    for (const id of byStatus.values()) expect(await deps.queue.getJob(id)).toBeUndefined();
    const kept = await ctx.db.messageBody.findMany({ select: { messageId: true } });
    expect(kept.map((b) => b.messageId)).toEqual([byStatus.get("held")]);
  } finally {
    await deps.queue.close();
    await deps.producer.close();
  }
});

it("settles expired holds a thousand at a time, each project as its holdExpiry says, and only those past their time", async () => {
  const denying = await createProjectFixture(ctx.db, ctx.config);
  const approving = await createProjectFixture(ctx.db, ctx.config);
  await ctx.db.project.update({
    where: { id: denying.project.id },
    data: { holdTtlMinutes: 10, holdExpiry: "deny" },
  });
  await ctx.db.project.update({
    where: { id: approving.project.id },
    data: { holdTtlMinutes: 10, holdExpiry: "approve" },
  });
  const old = new Date(Date.now() - 11 * 60_000);
  const held = (projectId: string, count: number, createdAt: Date) =>
    Array.from({ length: count }, () => ({
      id: randomUUID(),
      projectId,
      mailFrom: "sender@example.com",
      size: 1,
      sha256: "0".repeat(64),
      status: "held" as const,
      createdAt,
    }));
  await ctx.db.message.createMany({
    data: [
      ...held(denying.project.id, 1_005, old),
      ...held(approving.project.id, 3, old),
      // Five minutes old: two thirds of its hold time is still to come.
      ...held(denying.project.id, 2, new Date(Date.now() - 5 * 60_000)),
    ],
  });
  const deps = sweeperDeps();
  try {
    const result = await sweep(deps);
    expect(result.expiredHolds).toEqual({ approved: 3, denied: 1_005 });
    const counts = await ctx.db.message.groupBy({
      by: ["projectId", "status"],
      where: { projectId: { in: [denying.project.id, approving.project.id] } },
      _count: true,
    });
    expect(
      Object.fromEntries(
        counts.map((c) => [
          `${c.projectId === denying.project.id ? "denying" : "approving"} ${c.status}`,
          c._count,
        ]),
      ),
    ).toEqual({ "denying denied": 1_005, "denying held": 2, "approving queued": 3 });
    // The approved ones have their jobs; every settled one its event.
    const approved = await ctx.db.message.findMany({ where: { projectId: approving.project.id } });
    for (const message of approved) expect(await deps.queue.getJob(message.id)).toBeDefined();
    expect(
      await ctx.db.messageEvent.count({
        where: { type: "message.denied", data: { equals: { expired: true } } },
      }),
    ).toBe(1_005);
    expect(await ctx.db.messageEvent.count({ where: { type: "message.approved" } })).toBe(3);
    expect(await ctx.db.auditEvent.count({ where: { action: "message.denied", actor: "system" } })).toBe(
      1_005,
    );
    expect((await sweep(deps)).expiredHolds).toEqual({ approved: 0, denied: 0 });
  } finally {
    await deps.queue.close();
    await deps.producer.close();
  }
});

it("reads each project's held messages through an index, never by scanning every message", async () => {
  const pool = sqlPoolOf(ctx.db);
  const statements: { text: string; values?: unknown[] }[] = [];
  const capturing = {
    query: ((query: string | { text: string; values?: unknown[] }, values?: unknown[]) => {
      statements.push(typeof query === "string" ? { text: query, values } : query);
      return pool.query(query as never, values as never);
    }) as typeof pool.query,
  };
  const deps = sweeperDeps();
  try {
    await sweep({ ...deps, sql: capturing });
  } finally {
    await deps.queue.close();
    await deps.producer.close();
  }
  const expiry = statements.find((s) => s.text.includes('"holdExpiry"'));
  if (!expiry) throw new Error("the sweep ran no hold expiry statement");
  const client = await pool.connect();
  try {
    await client.query("SET enable_seqscan = off");
    const { rows } = await client.query<{ "QUERY PLAN": unknown }>(
      `EXPLAIN (FORMAT JSON) ${expiry.text}`,
      expiry.values,
    );
    const scans: Array<{ type: string; relation: string; index?: string }> = [];
    // Every index the plan reads, bitmap index scans (which name no relation) included.
    const indexes: string[] = [];
    const walk = (node: Record<string, unknown>) => {
      if (typeof node["Index Name"] === "string") indexes.push(node["Index Name"]);
      if (typeof node["Relation Name"] === "string")
        scans.push({
          type: node["Node Type"] as string,
          relation: node["Relation Name"],
          index: node["Index Name"] as string | undefined,
        });
      for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    const explained = (rows[0]?.["QUERY PLAN"] ?? []) as Array<{ Plan: Record<string, unknown> }>;
    walk(explained[0]?.Plan ?? {});
    const messageReads = scans.filter((scan) => scan.relation === "Message" && scan.type !== "ModifyTable");
    expect(messageReads.length).toBeGreaterThan(0);
    for (const scan of messageReads) expect(scan.type).not.toBe("Seq Scan");
    // Through an index led by the project (on a table this small the planner may take either of
    // them: (projectId, status, createdAt) or (projectId, createdAt, id)), never all messages.
    expect(indexes.some((index) => index.startsWith("Message_projectId"))).toBe(true);
  } finally {
    await client.query("RESET enable_seqscan");
    client.release();
  }
});
