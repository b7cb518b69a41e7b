import { execFile } from "node:child_process";
import { resolve } from "node:path";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  type TestContext,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../bin/postern.js");
// Each run of the CLI compiles its sources (tsx) and opens the database: seconds apiece.
const cliTimeoutMs = 180_000;

let ctx: TestContext;
let fixture: ProjectFixture;
beforeAll(async () => {
  ctx = await createTestContext({ WEBHOOK_ALLOW_PRIVATE: "true" });
  fixture = await createProjectFixture(ctx.db, ctx.config);
});
afterAll(async () => {
  await ctx?.close();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function postern(env: Record<string, string>, ...args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(
      "node",
      [bin, ...args],
      { env: { ...process.env, ...ctx.env, ...env } },
      (error, stdout, stderr) => {
        done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}
const run = (...args: string[]) => postern({}, ...args);

describe("postern webhooks", () => {
  it(
    "add (secret printed once), list, test, deliveries, replay, remove; refusals with their exit codes",
    async () => {
      const projectId = fixture.project.id;
      const added = await run(
        "webhooks",
        "add",
        projectId,
        "http://127.0.0.1:9/hooks",
        "--events",
        "message.delivered,message.failed",
        "--json",
      );
      expect(added.stderr).toBe("");
      expect(added.code).toBe(0);
      const hook = JSON.parse(added.stdout);
      expect(hook).toMatchObject({
        url: "http://127.0.0.1:9/hooks",
        events: ["message.delivered", "message.failed"],
      });
      expect(hook.secret).toMatch(/^whsec_/);

      const list = await run("webhooks", "list", projectId);
      expect(list.stdout).toBe(
        `${hook.id}  http://127.0.0.1:9/hooks  active  message.delivered,message.failed\n`,
      );
      expect(list.stdout).not.toContain(hook.secret);

      const tested = await run("webhooks", "test", projectId, hook.id, "--json");
      expect(tested.code).toBe(0);
      const delivery = JSON.parse(tested.stdout);
      expect(delivery).toMatchObject({ eventType: "webhook.test", status: "pending" });
      const deliveries = await run("webhooks", "deliveries", projectId, hook.id);
      expect(deliveries.stdout).toMatch(
        new RegExp(`^${delivery.id}  \\S+  webhook.test  pending  0 attempts  not tried yet\\n$`),
      );
      const replayed = await run("webhooks", "replay", projectId, hook.id, delivery.id);
      expect(replayed.code).toBe(0);
      expect(replayed.stdout).toContain(`delivery ${delivery.id} queued again`);
      const since = await run(
        "webhooks",
        "replay",
        projectId,
        hook.id,
        "--since",
        "2020-01-01T00:00:00Z",
        "--json",
      );
      expect(JSON.parse(since.stdout)).toEqual({ replayed: 0 });

      // Refusals: an address the operator does not allow (exit 2), an unknown type (2), no such webhook (3).
      const privateUrl = await postern(
        { WEBHOOK_ALLOW_PRIVATE: "false" },
        "webhooks",
        "add",
        projectId,
        "http://127.0.0.1:9/hooks",
        "--events",
        "all",
      );
      expect(privateUrl.code).toBe(2);
      expect(privateUrl.stderr).toContain("127.0.0.1, a loopback address: refused");
      const badType = await run(
        "webhooks",
        "add",
        projectId,
        "http://127.0.0.1:9/x",
        "--events",
        "message.sent",
      );
      expect(badType.code).toBe(2);
      expect(badType.stderr).toContain("unknown event type message.sent");

      const removed = await run("webhooks", "remove", projectId, hook.id);
      expect(removed.code).toBe(0);
      const again = await run("webhooks", "remove", projectId, hook.id);
      expect(again.code).toBe(3);
      expect(again.stderr).toContain(`no webhook ${hook.id}`);
      const actions = await ctx.db.auditEvent.findMany({
        where: { projectId, action: { startsWith: "webhook." }, actor: "cli" },
        orderBy: { id: "asc" },
      });
      expect(actions.map((a) => a.action)).toEqual([
        "webhook.created",
        "webhook.replayed",
        "webhook.replayed",
        "webhook.deleted",
      ]);
    },
    cliTimeoutMs,
  );
});
