import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { freePort } from "@postern/embedded";
import { createProjectFixture, createTestContext, SmtpSink, type TestContext } from "@postern/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { until } from "./wait";

/**
 * Issue 24: "SIGKILL of the process during a status change leaves status and event consistent".
 * Real processes change statuses on the test's PostgreSQL and Redis: `postern start worker`
 * (delivery records: delivered, deferred, failed) and status-churn.ts (accepts, single and bulk
 * retries and cancels). Both are killed with SIGKILL at a random moment, right when one of their
 * statements is running on the server: PostgreSQL runs a statement to its end even when its client
 * is gone, so a status change whose event were a second statement would be left without it.
 */

const cli = join(import.meta.dirname, "../../cli/bin/postern.js");
const churnScript = join(import.meta.dirname, "status-churn.ts");

let ctx: TestContext;
let sink: SmtpSink;
const children: ChildProcess[] = [];

beforeAll(async () => {
  ctx = await createTestContext({
    DELIVERY_BACKOFF: "1",
    DELIVERY_MAX_ATTEMPTS: "3",
    DELIVERY_SWEEP_INTERVAL: "1",
  });
  sink = await SmtpSink.start();
  // An upstream that accepts ok-*, defers soft-* and refuses hard-* recipients, and takes a few
  // milliseconds over DATA so that deliveries are on the wire when the processes die.
  sink.rcptReply = (address) =>
    address.startsWith("soft-")
      ? { code: 451, message: "4.3.0 try later" }
      : address.startsWith("hard-")
        ? { code: 550, message: "5.1.1 no such user" }
        : undefined;
  sink.dataDelayMs = 5;
  // Every committed status change, in commit order per message: a trigger runs in the transaction
  // of the statement that changes the row, so this log is the truth the events are held against.
  await ctx.db.$executeRawUnsafe(
    `CREATE TABLE "TestStatusChange" ("id" bigserial PRIMARY KEY, "messageId" uuid NOT NULL, "status" text NOT NULL)`,
  );
  await ctx.db.$executeRawUnsafe(`CREATE FUNCTION test_log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "TestStatusChange" ("messageId", "status") VALUES (NEW."id", NEW."status"::text);
  RETURN NULL;
END $$`);
  await ctx.db.$executeRawUnsafe(`CREATE TRIGGER test_log_status AFTER INSERT OR UPDATE OF "status" ON "Message"
FOR EACH ROW EXECUTE FUNCTION test_log_status()`);
});
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL");
});
afterAll(async () => {
  await sink?.stop();
  await ctx?.close();
});

/** The test's database URL with a name its sessions show in pg_stat_activity. */
function databaseUrlAs(applicationName: string): string {
  const url = new URL(ctx.databaseUrl);
  url.searchParams.set("application_name", applicationName);
  return url.toString();
}

/** Spawns a process and resolves once it printed `ready` (stdout or stderr). */
async function spawnUntil(args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes(ready)) resolve();
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited ${code}: ${output}`)));
  });
  return child;
}

const killedSessions = ["postern-kill-worker", "postern-kill-churn"];

/** Status changes (statements inserting or updating "Message") of the processes under test running on the server now. */
async function statusChangesInFlight(): Promise<number> {
  const rows = await ctx.db.$queryRaw<{ n: number }[]>`
SELECT count(*)::int AS n FROM pg_stat_activity
WHERE application_name = ANY (${killedSessions}::text[]) AND state = 'active'
  AND query ~ '(UPDATE|INSERT INTO) "Message"[^a-zA-Z]'`;
  return rows[0]?.n ?? 0;
}

async function sessionsLeft(): Promise<number> {
  const rows = await ctx.db.$queryRaw<{ n: number }[]>`
SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ANY (${killedSessions}::text[])`;
  return rows[0]?.n ?? 0;
}

async function eventCount(): Promise<number> {
  const rows = await ctx.db.$queryRaw<{ n: number }[]>`SELECT count(*)::int AS n FROM "MessageEvent"`;
  return rows[0]?.n ?? 0;
}

/**
 * Every message whose committed status changes (the trigger's log) are not exactly the statuses
 * its events say, in the same order; and every message whose status is not its last event's.
 * One statement: one snapshot.
 */
async function inconsistencies() {
  return ctx.db.$queryRaw<{ messageId: string; status: string; changes: string[]; events: string[] }[]>`
WITH changes AS (
  SELECT "messageId", array_agg("status" ORDER BY "id") AS statuses FROM "TestStatusChange" GROUP BY "messageId"
), events AS (
  SELECT "messageId",
         array_agg(CASE "type" WHEN 'message.accepted' THEN 'queued' WHEN 'message.retried' THEN 'queued'
                               ELSE substr("type", length('message.') + 1) END ORDER BY "id") AS statuses
  FROM "MessageEvent" GROUP BY "messageId"
)
SELECT m."id" AS "messageId", m."status"::text AS "status",
       coalesce(c.statuses, '{}') AS "changes", coalesce(e.statuses, '{}') AS "events"
FROM "Message" m
LEFT JOIN changes c ON c."messageId" = m."id"
LEFT JOIN events e ON e."messageId" = m."id"
WHERE c.statuses IS DISTINCT FROM e.statuses
   OR e.statuses[array_length(e.statuses, 1)] IS DISTINCT FROM m."status"::text
LIMIT 10`;
}

describe("SIGKILL during status changes", () => {
  it("leaves every message's status equal to its last event, and every status change with its event", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config, { upstream: sink.url });
    const rounds = 3;
    let killedInFlight = 0;
    for (let round = 0; round < rounds; round++) {
      const before = await eventCount();
      const worker = await spawnUntil(
        [cli, "start", "worker"],
        {
          ...process.env,
          ...ctx.env,
          DATABASE_URL: databaseUrlAs("postern-kill-worker"),
          HTTP_PORT: String(await freePort()),
        },
        "Postern is running",
      );
      const churn = await spawnUntil(
        [
          "--import",
          "tsx",
          churnScript,
          JSON.stringify({
            databaseUrl: databaseUrlAs("postern-kill-churn"),
            redisUrl: ctx.redisUrl,
            redisKeyPrefix: ctx.redisKeyPrefix,
            projectId: project.id,
          }),
        ],
        process.env,
        "churning",
      );
      // Well under way (hundreds of status changes), then a random moment, then the first instant
      // a status change of theirs is running on the server: the server commits it without its
      // client, so an event written by a later statement would be missing.
      await until(async () => (await eventCount()) >= before + 300, "300 more status changes", 60_000);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1_000));
      const deadline = Date.now() + 10_000;
      let inFlight = 0;
      while (inFlight === 0 && Date.now() < deadline) inFlight = await statusChangesInFlight();
      worker.kill("SIGKILL");
      churn.kill("SIGKILL");
      if (inFlight > 0) killedInFlight++;
      // The server finishes or rolls back what the dead sessions left, then drops them.
      await until(async () => (await sessionsLeft()) === 0, "the killed sessions to end", 30_000);
      expect(await inconsistencies()).toEqual([]);
    }
    expect(killedInFlight).toBeGreaterThan(0);
    // The processes made every kind of change before they died.
    const types = await ctx.db.$queryRaw<{ type: string }[]>`
SELECT DISTINCT "type" FROM "MessageEvent" WHERE "projectId" = ${project.id}::uuid ORDER BY "type"`;
    expect(types.map((row) => row.type)).toEqual([
      "message.accepted",
      "message.cancelled",
      "message.deferred",
      "message.delivered",
      "message.failed",
      "message.retried",
    ]);
  }, 240_000);
});
