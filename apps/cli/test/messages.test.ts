import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { deliveryQueueName } from "@postern/queue";
import {
  createProjectFixture,
  createQueuedMessageFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { Queue } from "bullmq";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");

let ctx: TestContext;
let fixture: ProjectFixture;
beforeAll(async () => {
  ctx = await createTestContext();
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(() => ctx.close());

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function postern(...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(
      "node",
      [bin, ...args],
      { env: { ...process.env, ...ctx.env }, encoding: "buffer" },
      (error, stdout, stderr) => {
        done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr: stderr.toString() });
      },
    );
  });
}

const json = (run: Run) => JSON.parse(run.stdout.toString());

describe("postern messages", () => {
  it("list (with filters) and show, as JSON and as text", async () => {
    const project = fixture.project;
    const first = await createQueuedMessageFixture(ctx.db, project, {
      from: "a@example.com",
      to: ["x@example.net"],
    });
    const second = await createQueuedMessageFixture(ctx.db, project, {
      from: "b@example.com",
      to: ["y@example.net"],
    });

    const all = await postern("messages", "list", project.id, "--json");
    expect(all.stderr).toBe("");
    expect(all.code).toBe(0);
    expect(json(all).items.map((m: { id: string }) => m.id)).toEqual(
      expect.arrayContaining([first.id, second.id]),
    );
    const byRecipient = await postern("messages", "list", project.id, "--to", "y@example.net", "--json");
    expect(json(byRecipient).items.map((m: { id: string }) => m.id)).toEqual([second.id]);
    const bySender = await postern("messages", "list", project.id, "--from", "a@example.com");
    expect(bySender.code).toBe(0);
    expect(bySender.stdout.toString()).toContain(first.id);
    expect(bySender.stdout.toString()).not.toContain(second.id);

    const show = await postern("messages", "show", project.id, first.id, "--json");
    expect(show.code).toBe(0);
    expect(json(show)).toMatchObject({
      id: first.id,
      status: "queued",
      from: "a@example.com",
      recipients: [{ address: "x@example.net", status: "pending" }],
    });
    const text = await postern("messages", "show", project.id, first.id);
    expect(text.stdout.toString()).toContain("x@example.net");
  });

  it("raw prints the stored bytes exactly, --json in base64", async () => {
    const raw = Buffer.concat([
      Buffer.from("Subject: bytes\r\n\r\ncaf"),
      Buffer.from([0xc3, 0xa9, 0x0d, 0x0a, 0x00, 0xff]),
    ]);
    const message = await createQueuedMessageFixture(ctx.db, fixture.project, { raw });
    const run = await postern("messages", "raw", fixture.project.id, message.id);
    expect(run.code).toBe(0);
    expect(run.stdout.equals(raw)).toBe(true);
    const asJson = json(await postern("messages", "raw", fixture.project.id, message.id, "--json"));
    expect(Buffer.from(asJson.raw, "base64").equals(raw)).toBe(true);
    expect(asJson.size).toBe(raw.length);
  });

  it("cancel, then cancel again (exit 4, invalid_transition), retry a failed one (enqueued)", async () => {
    const message = await createQueuedMessageFixture(ctx.db, fixture.project);
    const cancel = await postern("messages", "cancel", fixture.project.id, message.id, "--json");
    expect(cancel.code).toBe(0);
    expect(json(cancel)).toEqual({ id: message.id, status: "cancelled" });
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: message.id } })).status).toBe("cancelled");
    const events = await ctx.db.messageEvent.findMany({ where: { messageId: message.id } });
    expect(events.map((e) => e.type)).toEqual(["message.cancelled"]);
    const audit = await ctx.db.auditEvent.findFirst({ where: { action: "message.cancelled", actor: "cli" } });
    expect(audit?.details).toEqual({ messageId: message.id });

    const again = await postern("messages", "cancel", fixture.project.id, message.id, "--json");
    expect(again.code).toBe(4);
    expect(json(again).error.code).toBe("invalid_transition");
    expect(again.stderr).toContain("message is cancelled");

    const failed = await createQueuedMessageFixture(ctx.db, fixture.project);
    await ctx.db.message.update({ where: { id: failed.id }, data: { status: "failed" } });
    const retry = await postern("messages", "retry", fixture.project.id, failed.id, "--json");
    expect(retry.code).toBe(0);
    expect(json(retry)).toEqual({ id: failed.id, status: "queued" });
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    expect((await queue.getJob(failed.id))?.data).toMatchObject({ messageId: failed.id });
    await queue.close();
  });

  it("approve a held message (queued, enqueued), deny another; approve of a queued one is exit 4", async () => {
    const held = async () => {
      const message = await createQueuedMessageFixture(ctx.db, fixture.project);
      await ctx.db.message.update({ where: { id: message.id }, data: { status: "held" } });
      return message;
    };
    const first = await held();
    const approve = await postern("messages", "approve", fixture.project.id, first.id, "--json");
    expect(approve.code).toBe(0);
    expect(json(approve)).toEqual({ id: first.id, status: "queued" });
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    expect((await queue.getJob(first.id))?.data).toMatchObject({ messageId: first.id });
    await queue.close();

    const second = await held();
    const deny = await postern("messages", "deny", fixture.project.id, second.id);
    expect(deny.code).toBe(0);
    expect(deny.stdout.toString()).toContain(`message ${second.id} denied`);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: second.id } })).status).toBe("denied");
    const events = await ctx.db.messageEvent.findMany({
      where: { messageId: { in: [first.id, second.id] } },
    });
    expect(events.map((e) => [e.messageId, e.type]).sort()).toEqual(
      [
        [first.id, "message.approved"],
        [second.id, "message.denied"],
      ].sort(),
    );

    const again = await postern("messages", "approve", fixture.project.id, first.id, "--json");
    expect(again.code).toBe(4);
    expect(json(again).error.code).toBe("invalid_transition");
    expect(again.stderr).toContain("only held messages can be approved");
  });

  it("another project's message is not found (exit 3); a bad id is a usage error (exit 2)", async () => {
    const other = await createProjectFixture(ctx.db, ctx.config);
    const theirs = await createQueuedMessageFixture(ctx.db, other.project);
    for (const verb of ["show", "raw", "retry", "cancel", "approve", "deny"]) {
      const run = await postern("messages", verb, fixture.project.id, theirs.id, "--json");
      expect(run.code).toBe(3);
      expect(json(run).error.code).toBe("not_found");
    }
    expect((await postern("messages", "show", fixture.project.id, randomUUID())).code).toBe(3);
    expect((await postern("messages", "show", fixture.project.id, "nope")).code).toBe(2);
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirs.id } })).status).toBe("queued");
  });
});
