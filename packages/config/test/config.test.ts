import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, configurationTable, loadConfig, resolveSecrets, variables } from "@postern/config";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

let cwd: string;
beforeEach(async () => {
  cwd = await mkdtemp(join(tmpdir(), "postern-config-"));
});
afterEach(() => rm(cwd, { recursive: true, force: true }));

const production = {
  DATABASE_URL: "postgresql://u:p@db:5432/postern",
  REDIS_URL: "redis://redis:6379",
  ENCRYPTION_KEY: "00".repeat(32),
  ADMIN_TOKEN: "x".repeat(40),
};

function errorOf(env: Record<string, string>): string {
  try {
    loadConfig(env, cwd);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("gives the contract's defaults in embedded mode", () => {
    const config = loadConfig({}, cwd);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.redisUrl).toBeUndefined();
    expect(config.dataDir).toBe(join(cwd, ".postern"));
    expect(config.smtp).toMatchObject({
      host: "0.0.0.0",
      port: 2525,
      smtpsPort: 2465,
      maxMessageSize: 26214400,
    });
    expect(config.http.port).toBe(8080);
    expect(config.delivery.backoffSeconds).toEqual([60, 300, 900, 3600, 14400]);
    expect(config.delivery.maxAttempts).toBe(10);
    expect(config.logLevel).toBe("info");
    expect(config.smtp.inflowBacklog).toBe(250);
    expect(config.smtp.inflowDelayMs).toBe(1000);
    expect(config.smtp.dataMemoryBytes).toBe(16 * 1024 * 1024);
    expect(config.auditRetentionDays).toBe(90);
    expect(config.eventRetentionDays).toBe(90);
  });

  it.each([
    ["AUDIT_RETENTION_DAYS", "auditRetentionDays"],
    ["EVENT_RETENTION_DAYS", "eventRetentionDays"],
  ] as const)(
    "reads %s in whole days, 0 keeping the events forever; anything else stops",
    (variable, field) => {
      expect(loadConfig({ ...production, [variable]: "365" }, cwd)[field]).toBe(365);
      expect(loadConfig({ ...production, [variable]: "0" }, cwd)[field]).toBe(0);
      for (const [bad, reason] of [
        ["-1", "must be 0 or more days"],
        ["1.5", "must be a whole number of days"],
        ["ninety", variable],
      ]) {
        const message = errorOf({ ...production, [variable]: bad as string });
        expect(message).toContain(variable);
        expect(message).toContain(reason);
        expect(message).not.toContain("\n");
      }
    },
  );

  it("normalizes bare newlines by default; SMTP_BARE_NEWLINE=reject refuses them; anything else stops", () => {
    expect(loadConfig({}, cwd).smtp.bareNewline).toBe("normalize");
    expect(loadConfig({ ...production, SMTP_BARE_NEWLINE: "reject" }, cwd).smtp.bareNewline).toBe("reject");
    expect(errorOf({ ...production, SMTP_BARE_NEWLINE: "yes" })).toMatch(
      /SMTP_BARE_NEWLINE.*normalize or reject/,
    );
  });

  it("reads SMTP_DATA_MEMORY in bytes", () => {
    expect(loadConfig({ ...production, SMTP_DATA_MEMORY: "1048576" }, cwd).smtp.dataMemoryBytes).toBe(
      1048576,
    );
  });

  it("reads the webhook settings; the default retry schedule spans more than 24 hours", () => {
    const defaults = loadConfig(production, cwd).webhooks;
    expect(defaults).toEqual({
      allowPrivate: false,
      retryScheduleSeconds: [5, 300, 1800, 7200, 18000, 36000, 36000],
      timeoutMs: 10_000,
      disableAfterMs: 432_000_000,
      endpointConcurrency: 10,
    });
    expect(defaults.retryScheduleSeconds.reduce((a, b) => a + b, 0)).toBeGreaterThan(24 * 3600);
    const set = loadConfig(
      { ...production, WEBHOOK_ALLOW_PRIVATE: "true", WEBHOOK_RETRY_SCHEDULE: "1, 2.5" },
      cwd,
    );
    expect(set.webhooks).toMatchObject({ allowPrivate: true, retryScheduleSeconds: [1, 2.5] });
  });

  it("reads in-flow control's backlog (0 disables it) and delay (fractions of a second)", () => {
    const config = loadConfig({ ...production, SMTP_INFLOW_BACKLOG: "0", SMTP_INFLOW_DELAY: "0.25" }, cwd);
    expect(config.smtp.inflowBacklog).toBe(0);
    expect(config.smtp.inflowDelayMs).toBe(250);
  });

  it("leaves VERP and the inbound role off without BOUNCE_DOMAIN; reads it lower-case; refuses a bad one or a taken port", () => {
    expect(loadConfig({}, cwd).bounces).toEqual({
      domain: undefined,
      inboundPort: 2526,
      maxMessageSize: 10 * 1024 * 1024,
    });
    const config = loadConfig(
      {
        ...production,
        BOUNCE_DOMAIN: "Bounces.Example.COM",
        INBOUND_PORT: "25",
        INBOUND_MAX_MESSAGE_SIZE: "65536",
      },
      cwd,
    );
    expect(config.bounces).toEqual({ domain: "bounces.example.com", inboundPort: 25, maxMessageSize: 65536 });
    expect(errorOf({ ...production, BOUNCE_DOMAIN: "not a domain" })).toMatch(
      /^BOUNCE_DOMAIN: must be a domain name/,
    );
    expect(errorOf({ ...production, BOUNCE_DOMAIN: "b.example.com", INBOUND_PORT: "2525" })).toBe(
      "INBOUND_PORT: must differ from SMTP_PORT and SMTPS_PORT",
    );
  });

  it("parses every production variable", () => {
    const config = loadConfig(
      {
        ...production,
        SMTPS_PORT: "0",
        DELIVERY_BACKOFF: "5, 10",
        MAX_MESSAGE_SIZE: "1000",
        LOG_LEVEL: "debug",
      },
      cwd,
    );
    expect(config.databaseUrl).toBe(production.DATABASE_URL);
    expect(config.encryptionKey).toEqual(Buffer.alloc(32));
    expect(config.smtp.smtpsPort).toBe(0);
    expect(config.delivery.backoffSeconds).toEqual([5, 10]);
    expect(config.smtp.maxMessageSize).toBe(1000);
  });

  it("stops on a replaced variable, naming its replacement, instead of ignoring it", () => {
    expect(errorOf({ ...production, WORKER_PROCESSES: "2" })).toBe(
      "WORKER_PROCESSES: replaced by WORKER_THREADS (the delivery worker runs in threads of `postern start`)",
    );
    expect(loadConfig({ ...production, WORKER_THREADS: "2" }, cwd).delivery.workerThreads).toBe(2);
  });

  it("accepts ENCRYPTION_KEY as base64", () => {
    const key = Buffer.alloc(32, 7);
    const config = loadConfig({ ...production, ENCRYPTION_KEY: key.toString("base64") }, cwd);
    expect(config.encryptionKey).toEqual(key);
  });

  it.each([
    [{ ENCRYPTION_KEY: "abc" }, "ENCRYPTION_KEY: must be 32 bytes as hex or base64"],
    [{ ENCRYPTION_KEY: "00".repeat(31) }, "ENCRYPTION_KEY: must be 32 bytes as hex or base64"],
    [{ SMTP_PORT: "70000" }, "SMTP_PORT: must be a port number (0-65535)"],
    [{ SMTP_PORT: "smtp" }, "SMTP_PORT:"],
    [{ DATABASE_URL: "mysql://x" }, "DATABASE_URL: must be a URL starting with postgres:// or postgresql://"],
    [{ REDIS_URL: "localhost:6379" }, "REDIS_URL: must be a URL starting with redis:// or rediss://"],
    [
      { DATABASE_REPLICA_URL: "replica:5432" },
      "DATABASE_REPLICA_URL: must be a URL starting with postgres:// or postgresql://",
    ],
    [
      { DATABASE_REPLICA_URL: production.DATABASE_URL },
      "DATABASE_REPLICA_URL: must name the replica, not the same server as DATABASE_URL",
    ],
    [{ REDIS_CLUSTER: "on" }, "REDIS_CLUSTER: must be true or false"],
    [{ REDIS_CLUSTER: "true", REDIS_URL: "" }, "REDIS_CLUSTER: needs REDIS_URL, a node of the cluster"],
    [
      { REDIS_CLUSTER: "true", REDIS_URL: "redis://redis:6379/2" },
      "REDIS_URL: a Redis Cluster has database 0 only",
    ],
    [{ DELIVERY_BACKOFF: "60,,300" }, "DELIVERY_BACKOFF: must be a comma-separated list of seconds"],
    [{ DELIVERY_MAX_ATTEMPTS: "0" }, "DELIVERY_MAX_ATTEMPTS: must be greater than 0"],
    [
      { WEBHOOK_RETRY_SCHEDULE: "5,soon" },
      "WEBHOOK_RETRY_SCHEDULE: must be a comma-separated list of seconds",
    ],
    [{ WEBHOOK_ALLOW_PRIVATE: "sometimes" }, "WEBHOOK_ALLOW_PRIVATE: must be true or false"],
    [{ WEBHOOK_TIMEOUT: "0" }, "WEBHOOK_TIMEOUT: must be a number of seconds greater than 0"],
    [{ WEBHOOK_ENDPOINT_CONCURRENCY: "0" }, "WEBHOOK_ENDPOINT_CONCURRENCY: must be greater than 0"],
    [{ MAX_MESSAGE_SIZE: "1.5" }, "MAX_MESSAGE_SIZE: must be a whole number"],
    [{ LOG_LEVEL: "loud" }, "LOG_LEVEL:"],
    [{ ADMIN_TOKEN: "short" }, "ADMIN_TOKEN: must be at least 32 characters"],
    [{ SMTP_PROXY_PROTOCOL: "maybe" }, "SMTP_PROXY_PROTOCOL: must be true or false"],
    [{ SMTPS_PORT: "2525" }, "SMTPS_PORT: must differ from SMTP_PORT"],
    [{ SMTP_INFLOW_BACKLOG: "-1" }, "SMTP_INFLOW_BACKLOG: must be 0 or more"],
    [{ SMTP_INFLOW_BACKLOG: "1.5" }, "SMTP_INFLOW_BACKLOG: must be a whole number"],
    [{ SMTP_INFLOW_BACKLOG: "lots" }, "SMTP_INFLOW_BACKLOG:"],
    [{ SMTP_INFLOW_DELAY: "0" }, "SMTP_INFLOW_DELAY: must be a number of seconds greater than 0"],
    [{ SMTP_INFLOW_DELAY: "1s" }, "SMTP_INFLOW_DELAY:"],
    [{ SMTP_INFLOW_DELAY: "120" }, "SMTP_INFLOW_DELAY: must be at most 60 seconds"],
    [{ SMTP_DATA_MEMORY: "0" }, "SMTP_DATA_MEMORY: must be greater than 0"],
    [{ SMTP_DATA_MEMORY: "16MB" }, "SMTP_DATA_MEMORY:"],
    [
      { SMTP_TLS_CERT: "/nonexistent/cert.pem" },
      "SMTP_TLS_CERT: set SMTP_TLS_CERT and SMTP_TLS_KEY together",
    ],
    [
      { SMTP_TLS_CERT: "/nonexistent/c.pem", SMTP_TLS_KEY: "/nonexistent/k.pem" },
      "SMTP_TLS_CERT: cannot read /nonexistent/c.pem",
    ],
  ])("stops on %o with one line naming the variable", (bad, expected) => {
    const message = errorOf({ ...production, ...bad });
    expect(message).toContain(expected);
    expect(message).not.toContain("\n");
  });

  it("reads REDIS_CLUSTER: REDIS_URL then names a node of a Redis Cluster", () => {
    expect(loadConfig(production, cwd).redisCluster).toBe(false);
    const config = loadConfig(
      { ...production, REDIS_CLUSTER: "true", REDIS_URL: "rediss://:pw@node-1:7000" },
      cwd,
    );
    expect(config).toMatchObject({ redisCluster: true, redisUrl: "rediss://:pw@node-1:7000" });
  });

  it("requires ENCRYPTION_KEY and ADMIN_TOKEN outside embedded mode", () => {
    const { ENCRYPTION_KEY: _k, ...withoutKey } = production;
    expect(errorOf(withoutKey)).toBe(
      "ENCRYPTION_KEY: required when DATABASE_URL is set (only embedded mode generates one)",
    );
    const { ADMIN_TOKEN: _t, ...withoutToken } = production;
    expect(errorOf(withoutToken)).toBe(
      "ADMIN_TOKEN: required when DATABASE_URL is set (only embedded mode generates one)",
    );
  });

  it("takes DATABASE_REPLICA_URL beside DATABASE_URL only", () => {
    const replica = "postgresql://reader:p@db-replica:5432/postern";
    expect(loadConfig({ ...production, DATABASE_REPLICA_URL: replica }, cwd).databaseReplicaUrl).toBe(
      replica,
    );
    expect(loadConfig(production, cwd).databaseReplicaUrl).toBeUndefined();
    expect(errorOf({ DATABASE_REPLICA_URL: replica })).toBe(
      "DATABASE_REPLICA_URL: requires DATABASE_URL (a replica of the embedded PostgreSQL is not supported)",
    );
  });

  it("reads .env, the environment taking precedence, an empty variable counting as unset", async () => {
    await writeFile(join(cwd, ".env"), "HTTP_PORT=9000\nSMTP_PORT=2600\nLOG_LEVEL=warn\n");
    const config = loadConfig({ SMTP_PORT: "2700", LOG_LEVEL: "" }, cwd);
    expect(config.http.port).toBe(9000);
    expect(config.smtp.port).toBe(2700);
    expect(config.logLevel).toBe("warn");
  });
});

describe("resolveSecrets", () => {
  it("generates the embedded secrets once, 0600, and reuses them", async () => {
    const first = resolveSecrets(loadConfig({}, cwd));
    expect(first.generated.sort()).toEqual(["adminToken", "encryptionKey"]);
    expect(first.config.encryptionKey).toHaveLength(32);
    const second = resolveSecrets(loadConfig({}, cwd));
    expect(second.generated).toEqual([]);
    expect(second.config.adminToken).toBe(first.config.adminToken);
    expect(second.config.encryptionKey).toEqual(first.config.encryptionKey);
    const { stat } = await import("node:fs/promises");
    expect((await stat(join(cwd, ".postern/secrets/admin-token"))).mode & 0o777).toBe(0o600);
  });

  it("uses the configured secrets and writes nothing", () => {
    const { generated, config } = resolveSecrets(loadConfig(production, cwd));
    expect(generated).toEqual([]);
    expect(config.adminToken).toBe(production.ADMIN_TOKEN);
  });
});

describe("docs/configuration.md", () => {
  it("lists every variable exactly as the schema defines it (npm run docs:config)", async () => {
    // Compared cell by cell: a markdown formatter may pad the columns.
    const rows = (text: string) =>
      text
        .split("\n")
        .filter((line) => line.startsWith("| `"))
        .map((line) => line.split("|").map((cell) => cell.trim()));
    const doc = await readFile(new URL("../../../docs/configuration.md", import.meta.url), "utf8");
    expect(rows(doc)).toEqual(rows(configurationTable()));
    expect(rows(doc)).toHaveLength(Object.keys(variables).length);
  });
});
