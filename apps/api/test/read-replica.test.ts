import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startApi } from "@postern/api";
import { loadConfig, type ResolvedConfig, resolveSecrets } from "@postern/config";
import { createDatabase, type Database, migrate } from "@postern/db";
import { type RunningService, startEmbeddedPostgres } from "@postern/embedded";
import { createRedis, type Redis } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import {
  createProjectFixture,
  type ProjectFixture,
  type StreamingReplica,
  startStreamingReplica,
} from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

/**
 * The API with DATABASE_REPLICA_URL, against real streaming replication between two embedded
 * PostgreSQL clusters (issue 30, point 4): history reads come from the replica, writes land on
 * the primary, and a replica that is down is a 503 naming it and a readiness check that fails.
 */

let root: string;
let primary: RunningService;
let replica: StreamingReplica;
let db: Database;
let redis: Redis;
let config: ResolvedConfig;
let api: Awaited<ReturnType<typeof startApi>>;
let base: string;
let fixture: ProjectFixture;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "postern-replica-"));
  // Run as root, PostgreSQL runs as `postgres` and must reach its directories.
  await chmod(root, 0o755);
  const primaryDir = join(root, "primary");
  primary = await startEmbeddedPostgres({ dir: primaryDir, ephemeral: true });
  await migrate(primary.url);
  replica = await startStreamingReplica({
    primaryDir,
    primaryUrl: primary.url,
    replicaDir: join(root, "replica"),
  });
  await replica.caughtUp();

  const redisKeyPrefix = `test-replica-${randomBytes(6).toString("hex")}`;
  const env = {
    DATABASE_URL: primary.url,
    DATABASE_REPLICA_URL: replica.url,
    REDIS_URL: inject("redisUrl"),
    REDIS_KEY_PREFIX: redisKeyPrefix,
    DATA_DIR: join(root, "data"),
    ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    ADMIN_TOKEN: `pst_admin_${randomBytes(24).toString("base64url")}`,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    LOG_LEVEL: "silent",
  };
  const loaded = resolveSecrets(loadConfig(env, root)).config;
  config = { ...loaded, databaseUrl: primary.url, redisUrl: env.REDIS_URL };
  expect(config.databaseReplicaUrl).toBe(replica.url);
  db = createDatabase(primary.url, { max: 3 });
  redis = createRedis(config.redisUrl);
  fixture = await createProjectFixture(db, config, { senderDomains: ["example.com"] });
  // startApi opens the replica's pool from config.databaseReplicaUrl itself.
  api = await startApi({
    config,
    db,
    redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
  });
  base = api.address;
}, 120_000);

afterAll(async () => {
  await api?.stop();
  await db?.$disconnect();
  if (redis) {
    const keys = await redis.keys(`${config.redisKeyPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
  await replica?.stop();
  await primary?.stop();
  if (root) await rm(root, { recursive: true, force: true });
}, 60_000);

const auth = () => ({ authorization: `Bearer ${fixture.apiToken.token}` });

async function submit(subject: string): Promise<string> {
  const response = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: { ...auth(), "content-type": "application/json" },
    body: JSON.stringify({ from: "app@example.com", to: ["user@example.net"], subject, text: "Hello." }),
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { id: string }).id;
}

async function get(path: string) {
  const response = await fetch(`${base}${path}`, { headers: auth() });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const listedIds = async () => {
  const { status, body } = await get("/v1/messages");
  expect(status).toBe(200);
  return (body.items as { id: string }[]).map((item) => item.id);
};

describe("the API with a read replica", () => {
  it("lists from the replica: a message written while replay is paused is listed once it resumes", async () => {
    const first = await submit("before the pause");
    await replica.caughtUp();
    expect(await listedIds()).toEqual([first]);

    await replica.pauseReplay();
    try {
      // Writes still go to the primary while the replica stands still.
      const second = await submit("during the pause");
      const onPrimary = await db.message.findMany({ select: { id: true, subject: true } });
      expect(onPrimary.map((m) => m.id).sort()).toEqual([first, second].sort());

      // The list, the event feed and the stats are the replica's: not there yet.
      expect(await listedIds()).toEqual([first]);
      const feed = await get("/v1/events");
      expect((feed.body.items as { messageId: string }[]).map((e) => e.messageId)).toEqual([first]);
      const stats = await get("/v1/stats");
      expect((stats.body.counts as { accepted: number }).accepted).toBe(1);

      // A suppression added now counts (primary) but is listed, and audited in the log read, later.
      const added = await fetch(`${base}/v1/suppressions`, {
        method: "POST",
        headers: { ...auth(), "content-type": "application/json" },
        body: JSON.stringify({ address: "gone@example.net" }),
      });
      expect(added.status).toBe(201);
      expect((await get("/v1/suppressions")).body.items).toEqual([]);
      const auditActions = async () =>
        ((await get("/v1/audit-logs")).body.items as { action: string }[]).map((e) => e.action);
      expect(await auditActions()).not.toContain("suppression.added");

      // Asked for by id, a message the replica has not replayed yet is read from the primary.
      const detail = await get(`/v1/messages/${second}`);
      expect(detail.status).toBe(200);
      expect(detail.body.subject).toBe("during the pause");
      const events = await get(`/v1/messages/${second}/events`);
      expect(events.status).toBe(200);
      expect((events.body.items as { type: string }[]).map((e) => e.type)).toEqual(["message.accepted"]);

      await replica.resumeReplay();
      await replica.caughtUp();
      expect(await listedIds()).toEqual([second, first]);
      const caughtUpStats = await get("/v1/stats");
      expect((caughtUpStats.body.counts as { accepted: number }).accepted).toBe(2);
      expect((await get("/v1/suppressions")).body.items).toMatchObject([{ address: "gone@example.net" }]);
      expect(await auditActions()).toContain("suppression.added");
    } finally {
      await replica.resumeReplay();
    }
  });

  it("reports the replica in /health/ready", async () => {
    const response = await fetch(`${base}/health/ready`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({
      status: "ok",
      checks: { postgres: "ok", postgresReplica: "ok", redis: "ok" },
    });
  });

  // Last: it stops the replica.
  it("answers 503 replica_unavailable for history reads while the replica is down; writes go on", async () => {
    await replica.stop();

    const list = await get("/v1/messages");
    expect(list.status).toBe(503);
    expect(list.body).toMatchObject({ error: { code: "replica_unavailable" } });
    expect((list.body.error as { message: string }).message).toBe(
      "the read replica does not answer; try again later (writes and the other reads still work)",
    );
    // The replica's address is the operator's business, not the client's.
    expect(JSON.stringify(list.body)).not.toContain(String(new URL(replica.url).port));
    const audit = await get("/v1/audit-logs");
    expect(audit.status).toBe(503);

    const ready = await fetch(`${base}/health/ready`);
    expect(ready.status).toBe(503);
    const readiness = (await ready.json()) as { checks: Record<string, string> };
    expect(readiness.checks.postgres).toBe("ok");
    expect(readiness.checks.postgresReplica).not.toBe("ok");

    // The primary still takes submissions and serves what it owns (the project's own settings).
    const id = await submit("with the replica down");
    expect(await db.message.count({ where: { id } })).toBe(1);
    const project = await get("/v1/project");
    expect(project.status).toBe(200);
  });
});

describe("the API with a read replica that takes connections and never answers", () => {
  it("answers its history reads 503 after the connect timeout instead of hanging", async () => {
    // A listening socket that never says a word: a host gone behind a proxy, a stuck server.
    const held = new Set<Socket>();
    const silent = createServer((socket) => {
      held.add(socket);
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as AddressInfo;
    const stuck = await startApi({
      config: { ...config, databaseReplicaUrl: `postgresql://postern:x@127.0.0.1:${port}/postern` },
      db,
      redis,
      log: createLogger({ level: "silent" }),
      metrics: createMetricsRegistry(),
    });
    try {
      const response = await fetch(`${stuck.address}/v1/messages`, { headers: auth() });
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({ error: { code: "replica_unavailable" } });
      const ready = await fetch(`${stuck.address}/health/ready`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { checks: Record<string, string> }).checks.postgresReplica).toBe(
        "no answer within 2000 ms",
      );
    } finally {
      await stuck.stop();
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
