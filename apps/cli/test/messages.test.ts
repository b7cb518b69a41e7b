import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { changeMessageStatus, retryMessage } from "@postern/messages";
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

// Each spawn of the binary takes seconds on a loaded machine, and a test spawns up to eight.
describe("postern messages", { timeout: 120_000 }, () => {
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

describe("postern messages actions", () => {
  it("a dry run counts what the real run then changes; one audit event; retried messages get a job", {
    timeout: 60_000,
  }, async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const queued = [];
    for (let i = 0; i < 3; i++) queued.push(await createQueuedMessageFixture(ctx.db, project));
    const delivered = await createQueuedMessageFixture(ctx.db, project);
    await ctx.db.message.update({ where: { id: delivered.id }, data: { status: "delivered" } });
    const others = await createProjectFixture(ctx.db, ctx.config);
    const theirs = await createQueuedMessageFixture(ctx.db, others.project);
    const statuses = async () =>
      (await ctx.db.message.findMany({ where: { projectId: project.id }, select: { status: true } }))
        .map((m) => m.status)
        .sort();
    const audits = () =>
      ctx.db.auditEvent.count({ where: { projectId: project.id, action: "message.bulk_action" } });

    const dry = await postern("messages", "actions", project.id, "--action", "cancel", "--dry-run", "--json");
    expect(dry.stderr).toBe("");
    expect(dry.code).toBe(0);
    expect(json(dry)).toEqual({ matched: 4, changed: 3, dryRun: true });
    expect(await statuses()).toEqual(["delivered", "queued", "queued", "queued"]);
    expect(await audits()).toBe(0);

    const run = await postern("messages", "actions", project.id, "--action", "cancel");
    expect(run.code).toBe(0);
    expect(run.stdout.toString()).toBe("matched 4, changed 3\n");
    expect(await statuses()).toEqual(["cancelled", "cancelled", "cancelled", "delivered"]);
    const audit = await ctx.db.auditEvent.findFirstOrThrow({
      where: { projectId: project.id, action: "message.bulk_action" },
    });
    expect(audit).toMatchObject({ actor: "cli", details: { action: "cancel", matched: 4, changed: 3 } });
    const events = await ctx.db.messageEvent.findMany({
      where: { messageId: { in: queued.map((m) => m.id) } },
    });
    expect(events.map((e) => e.type)).toEqual(Array(3).fill("message.cancelled"));
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: theirs.id } })).status).toBe("queued");

    // A filter: only the failed message from this sender is retried, and gets a job now.
    const failed = await createQueuedMessageFixture(ctx.db, project, { from: "retry@example.com" });
    await ctx.db.message.update({ where: { id: failed.id }, data: { status: "failed" } });
    const retry = await postern(
      "messages",
      "actions",
      project.id,
      "--action",
      "retry",
      "--status",
      "failed",
      "--from",
      "retry@example.com",
      "--after",
      new Date(Date.now() - 60_000).toISOString(),
      "--json",
    );
    expect(retry.code).toBe(0);
    expect(json(retry)).toEqual({ matched: 1, changed: 1, dryRun: false });
    expect((await ctx.db.message.findUniqueOrThrow({ where: { id: failed.id } })).status).toBe("queued");
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    expect((await queue.getJob(failed.id))?.data).toMatchObject({ messageId: failed.id });
    await queue.close();
  });

  it("approves every held message a filter matches, each with a job", { timeout: 60_000 }, async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const held = [];
    for (let i = 0; i < 2; i++) {
      const message = await createQueuedMessageFixture(ctx.db, project);
      await ctx.db.message.update({ where: { id: message.id }, data: { status: "held" } });
      held.push(message.id);
    }
    const run = await postern(
      "messages",
      "actions",
      project.id,
      "--action",
      "approve",
      "--status",
      "held",
      "--json",
    );
    expect(run.code).toBe(0);
    expect(json(run)).toEqual({ matched: 2, changed: 2, dryRun: false });
    const queue = new Queue(deliveryQueueName, { connection: ctx.redis, prefix: ctx.config.redisKeyPrefix });
    for (const id of held) {
      expect((await ctx.db.message.findUniqueOrThrow({ where: { id } })).status).toBe("queued");
      expect(await queue.getJob(id)).toBeDefined();
    }
    await queue.close();
  });

  it("refuses a missing or unknown action, a bad status or time, as usage errors (exit 2)", {
    timeout: 60_000,
  }, async () => {
    const id = fixture.project.id;
    const usages = [
      [id],
      [id, "--action", "delete"],
      [id, "--action", "cancel", "--status", "lost"],
      [id, "--action", "cancel", "--after", "yesterday"],
      ["nope", "--action", "cancel"],
    ];
    const runs = await Promise.all(usages.map((args) => postern("messages", "actions", ...args)));
    expect(runs.map((run, i) => [usages[i], run.code, run.stderr !== ""])).toEqual(
      usages.map((args) => [args, 2, true]),
    );
  });
});

describe("postern events", () => {
  const cancel = async (projectId: string, id: string) =>
    expect(
      await changeMessageStatus(ctx.db, { projectId, id, action: "cancel", actor: "test", ip: null }),
    ).toEqual({ ok: true });

  it("lists a project's events oldest first, by type, after a cursor, and one message's", {
    timeout: 120_000,
  }, async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const first = await createQueuedMessageFixture(ctx.db, project);
    const second = await createQueuedMessageFixture(ctx.db, project);
    await cancel(project.id, first.id);
    await cancel(project.id, second.id);
    await ctx.db.message.update({ where: { id: first.id }, data: { status: "failed" } });
    await retryMessage(ctx.db, { projectId: project.id, id: first.id, actor: "test", ip: null });
    const other = await createProjectFixture(ctx.db, ctx.config);
    const theirs = await createQueuedMessageFixture(ctx.db, other.project);
    await cancel(other.project.id, theirs.id);

    const lines = (run: Run) =>
      run.stdout
        .toString()
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as { cursor: string; type: string; messageId: string; id: string });
    const all = await postern("events", project.id, "--json");
    expect(all.stderr).toBe("");
    expect(all.code).toBe(0);
    expect(lines(all).map((e) => [e.type, e.messageId])).toEqual([
      ["message.cancelled", first.id],
      ["message.cancelled", second.id],
      ["message.retried", first.id],
    ]);
    const [one, , three] = lines(all);
    const after = await postern("events", project.id, "--after", one?.cursor ?? "", "--json");
    expect(lines(after).map((e) => e.id)).toEqual(
      lines(all)
        .slice(1)
        .map((e) => e.id),
    );
    const limited = await postern("events", project.id, "-n", "1", "--json");
    expect(lines(limited).map((e) => e.id)).toEqual([one?.id]);
    const byType = await postern("events", project.id, "--type", "message.retried", "--json");
    expect(lines(byType).map((e) => e.id)).toEqual([three?.id]);
    const ofMessage = await postern("events", project.id, "--message", first.id, "--json");
    expect(lines(ofMessage).map((e) => e.type)).toEqual(["message.cancelled", "message.retried"]);
    const text = await postern("events", project.id);
    expect(text.stdout.toString()).toContain(`${three?.cursor}  message.retried`);

    // Another project's message is not found; bad input is a usage error.
    const foreign = await postern("events", project.id, "--message", theirs.id, "--json");
    expect(foreign.code).toBe(3);
    expect(json(foreign).error.code).toBe("not_found");
    const usages = [
      ["--after", "abc"],
      ["--type", "message.lost"],
      ["--message", "nope"],
      ["--message", first.id, "--follow"],
    ];
    const runs = await Promise.all(usages.map((args) => postern("events", project.id, ...args)));
    expect(runs.map((run, i) => [usages[i], run.code])).toEqual(usages.map((args) => [args, 2]));
  });

  it("--follow prints events as they are written, from the cursor given, and exits 0 on SIGTERM", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const before = await createQueuedMessageFixture(ctx.db, project);
    await cancel(project.id, before.id);
    const past = JSON.parse((await postern("events", project.id, "--json")).stdout.toString());

    const child = spawn("node", [bin, "events", project.id, "--after", past.cursor, "--follow", "--json"], {
      env: { ...process.env, ...ctx.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    let output = "";
    const lines = () => output.split("\n").filter((l) => l !== "");
    const firstLine = new Promise<void>((done, fail) => {
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (lines().length > 0) done();
      });
      child.once("exit", () => fail(new Error(`events --follow exited: ${output}`)));
    });
    try {
      const later = await createQueuedMessageFixture(ctx.db, project);
      await cancel(project.id, later.id);
      await firstLine;
      const followed = lines().map((l) => JSON.parse(l));
      // Only what came after the cursor: the later message's event, not the one before.
      expect(followed.map((e: { messageId: string }) => e.messageId)).toEqual([later.id]);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  }, 60_000);
});
