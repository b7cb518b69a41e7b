import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseDotenv } from "dotenv";
import { type Environment, environmentSchema, type VariableName } from "./schema";

/** A configuration problem, worded as the one line an operator sees before the process exits. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface Config {
  /** Unset: the embedded PostgreSQL is used. */
  databaseUrl: string | undefined;
  /** DATABASE_REPLICA_URL: where the API's history reads go; unset: to `databaseUrl`. */
  databaseReplicaUrl: string | undefined;
  /** Unset: the embedded redis-server is used. */
  redisUrl: string | undefined;
  /** REDIS_CLUSTER: `redisUrl` is a node of a Redis Cluster. */
  redisCluster: boolean;
  redisKeyPrefix: string;
  /** Absolute path. */
  dataDir: string;
  smtp: {
    host: string;
    port: number;
    /** 0: implicit TLS disabled. */
    smtpsPort: number;
    hostname: string;
    tlsCertFile: string | undefined;
    tlsKeyFile: string | undefined;
    proxyProtocol: boolean;
    maxConnections: number;
    maxConnectionsPerIp: number;
    idleTimeoutMs: number;
    /** SMTP_TLS_HANDSHAKE_TIMEOUT. */
    tlsHandshakeTimeoutMs: number;
    /** SMTP_AUTH_DEADLINE: from the greeting to a successful AUTH. */
    authDeadlineMs: number;
    /** SMTP_DATA_DEADLINE: from 354 to the end of the message. */
    dataDeadlineMs: number;
    /** SMTP_HARD_ERROR_LIMIT. */
    hardErrorLimit: number;
    maxMessageSize: number;
    /** SMTP_BARE_NEWLINE: what a line ending in a bare LF gets. */
    bareNewline: "normalize" | "reject";
    authCacheTtlMs: number;
    authFailuresPerIp: number;
    authFailuresPerKey: number;
    /** Waiting delivery jobs at which new transactions are held at MAIL FROM; 0: never held. */
    inflowBacklog: number;
    /** Longest hold of one transaction. */
    inflowDelayMs: number;
    /** SMTP_DATA_MEMORY. */
    dataMemoryBytes: number;
  };
  http: {
    host: string;
    port: number;
    rateLimitPerMinute: number;
    /** API_TOKEN_CACHE_TTL. */
    tokenCacheTtlMs: number;
    /** METRICS_TOKEN: when set, GET /metrics requires it as a bearer token. */
    metricsToken: string | undefined;
    /** DASHBOARD_SESSION_HOURS, in ms. */
    dashboardSessionMs: number;
  };
  delivery: {
    backoffSeconds: number[];
    maxAttempts: number;
    concurrency: number;
    projectConcurrency: number;
    /** Connections to one upstream host:port, all projects together, per worker. */
    upstreamConcurrency: number;
    connectTimeoutMs: number;
    greetingTimeoutMs: number;
    /** DIRECT_SMTP_PORT. */
    directSmtpPort: number;
    /** Failures to connect in a row that suspend an upstream (circuit breaker). */
    circuitFailures: number;
    circuitCooldownMs: number;
    /** DESTINATION_CONCURRENCY and DESTINATION_RATE_PER_MINUTE; 0: no cap. */
    destination: { concurrency: number; ratePerMinute: number };
    /** Worker threads `postern start` runs when the worker runs beside other roles. */
    workerThreads: number;
    sweepIntervalMs: number;
    stalledTimeoutMs: number;
    bodyRetentionDays: number;
  };
  /** AUDIT_RETENTION_DAYS; 0: audit events are kept forever. */
  auditRetentionDays: number;
  /** EVENT_RETENTION_DAYS; 0: message events are kept forever. */
  eventRetentionDays: number;
  /** DNS_SERVERS as `ip[:port]` strings; undefined: the system's resolvers. */
  dnsServers: string[] | undefined;
  webhooks: {
    /** WEBHOOK_ALLOW_PRIVATE: endpoints on loopback, private and link-local addresses allowed. */
    allowPrivate: boolean;
    /** WEBHOOK_RETRY_SCHEDULE: seconds before each retry; after the last, the delivery fails. */
    retryScheduleSeconds: number[];
    timeoutMs: number;
    /** WEBHOOK_DISABLE_AFTER: an endpoint failing this long is disabled. */
    disableAfterMs: number;
    /** WEBHOOK_ENDPOINT_CONCURRENCY: requests in flight per endpoint, every worker together. */
    endpointConcurrency: number;
  };
  /** VERP return paths and the inbound role (docs/bounces.md). */
  bounces: {
    /** BOUNCE_DOMAIN, lower-case; undefined: no VERP and no inbound role. */
    domain: string | undefined;
    /** INBOUND_PORT. */
    inboundPort: number;
    /** INBOUND_MAX_MESSAGE_SIZE. */
    maxMessageSize: number;
  };
  /** Given, or (embedded mode only) generated into DATA_DIR by `resolveSecrets`. */
  encryptionKey: Buffer | undefined;
  adminToken: string | undefined;
  /** UPSTREAM_PASSWORD: the CLI's source of an upstream password besides a file or a prompt. */
  upstreamPassword: string | undefined;
  shutdownTimeoutMs: number;
  logLevel: Environment["LOG_LEVEL"];
  logFormat: Environment["LOG_FORMAT"];
}

/** A Config whose secrets are known (given, or generated in embedded mode). */
export type ConfigWithSecrets = Config & { encryptionKey: Buffer; adminToken: string };

/** What every role receives: secrets known and the services (configured or embedded) running. */
export type ResolvedConfig = ConfigWithSecrets & { databaseUrl: string; redisUrl: string };

export type EnvSource = Record<string, string | undefined>;

/** Variables of earlier versions, and what replaced them (CHANGELOG.md). */
const replacedVariables: Record<string, string> = {
  WORKER_PROCESSES: "WORKER_THREADS (the delivery worker runs in threads of `postern start`)",
};

/**
 * Reads the configuration from `env` (by default the process environment, over a `.env` file in
 * `cwd` when present). Throws ConfigError naming the variable and the problem.
 */
export function loadConfig(env: EnvSource = process.env, cwd = process.cwd()): Config {
  // An empty variable counts as unset (compose files often pass `X=${X}`): .env, then the default, apply.
  const set = (source: EnvSource) =>
    Object.entries(source).filter(([, v]) => v !== undefined && v.trim() !== "");
  const input = Object.fromEntries([...set(readDotenv(cwd)), ...set(env)]);
  // A variable that no longer exists would be ignored without a word: name its replacement.
  for (const [old, replacement] of Object.entries(replacedVariables)) {
    if (input[old] !== undefined) throw new ConfigError(`${old}: replaced by ${replacement}`);
  }
  const parsed = environmentSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${String(issue.path[0])}: ${issue.message}`);
    throw new ConfigError(problems.join("; "));
  }
  const e = parsed.data;
  const embeddedDatabase = e.DATABASE_URL === undefined;
  if (!embeddedDatabase) {
    for (const name of ["ENCRYPTION_KEY", "ADMIN_TOKEN"] as const satisfies VariableName[]) {
      if (e[name] === undefined) {
        throw new ConfigError(
          `${name}: required when DATABASE_URL is set (only embedded mode generates one)`,
        );
      }
    }
  }
  if (e.DATABASE_REPLICA_URL !== undefined) {
    if (embeddedDatabase) {
      throw new ConfigError(
        "DATABASE_REPLICA_URL: requires DATABASE_URL (a replica of the embedded PostgreSQL is not supported)",
      );
    }
    if (e.DATABASE_REPLICA_URL === e.DATABASE_URL) {
      throw new ConfigError(
        "DATABASE_REPLICA_URL: must name the replica, not the same server as DATABASE_URL",
      );
    }
  }
  if (e.REDIS_CLUSTER && e.REDIS_URL === undefined) {
    throw new ConfigError(
      "REDIS_CLUSTER: needs REDIS_URL, a node of the cluster (the embedded redis-server is a single node)",
    );
  }
  if (e.REDIS_CLUSTER && !["", "/", "/0"].includes(new URL(e.REDIS_URL as string).pathname)) {
    throw new ConfigError("REDIS_URL: a Redis Cluster has database 0 only; remove the database number");
  }
  if ((e.SMTP_TLS_CERT === undefined) !== (e.SMTP_TLS_KEY === undefined)) {
    throw new ConfigError("SMTP_TLS_CERT: set SMTP_TLS_CERT and SMTP_TLS_KEY together, or neither");
  }
  for (const name of ["SMTP_TLS_CERT", "SMTP_TLS_KEY"] as const) {
    const file = e[name];
    if (file !== undefined) assertReadable(name, resolve(cwd, file));
  }
  if (e.SMTPS_PORT !== 0 && e.SMTPS_PORT === e.SMTP_PORT) {
    throw new ConfigError("SMTPS_PORT: must differ from SMTP_PORT (or be 0 to disable implicit TLS)");
  }
  // The inbound role listens on SMTP_HOST too; port 0 (any free port) cannot collide.
  if (
    e.BOUNCE_DOMAIN !== undefined &&
    e.INBOUND_PORT !== 0 &&
    [e.SMTP_PORT, e.SMTPS_PORT].includes(e.INBOUND_PORT)
  ) {
    throw new ConfigError("INBOUND_PORT: must differ from SMTP_PORT and SMTPS_PORT");
  }

  return {
    databaseUrl: e.DATABASE_URL,
    databaseReplicaUrl: e.DATABASE_REPLICA_URL,
    redisUrl: e.REDIS_URL,
    redisCluster: e.REDIS_CLUSTER,
    redisKeyPrefix: e.REDIS_KEY_PREFIX,
    dataDir: resolve(cwd, e.DATA_DIR),
    smtp: {
      host: e.SMTP_HOST,
      port: e.SMTP_PORT,
      smtpsPort: e.SMTPS_PORT,
      hostname: e.SMTP_HOSTNAME,
      tlsCertFile: e.SMTP_TLS_CERT && resolve(cwd, e.SMTP_TLS_CERT),
      tlsKeyFile: e.SMTP_TLS_KEY && resolve(cwd, e.SMTP_TLS_KEY),
      proxyProtocol: e.SMTP_PROXY_PROTOCOL,
      maxConnections: e.SMTP_MAX_CONNECTIONS,
      maxConnectionsPerIp: e.SMTP_MAX_CONNECTIONS_PER_IP,
      idleTimeoutMs: e.SMTP_IDLE_TIMEOUT * 1000,
      tlsHandshakeTimeoutMs: e.SMTP_TLS_HANDSHAKE_TIMEOUT * 1000,
      authDeadlineMs: e.SMTP_AUTH_DEADLINE * 1000,
      dataDeadlineMs: e.SMTP_DATA_DEADLINE * 1000,
      hardErrorLimit: e.SMTP_HARD_ERROR_LIMIT,
      maxMessageSize: e.MAX_MESSAGE_SIZE,
      bareNewline: e.SMTP_BARE_NEWLINE,
      authCacheTtlMs: e.SMTP_AUTH_CACHE_TTL * 1000,
      authFailuresPerIp: e.SMTP_AUTH_FAILURES_PER_IP,
      authFailuresPerKey: e.SMTP_AUTH_FAILURES_PER_KEY,
      inflowBacklog: e.SMTP_INFLOW_BACKLOG,
      inflowDelayMs: e.SMTP_INFLOW_DELAY * 1000,
      dataMemoryBytes: e.SMTP_DATA_MEMORY,
    },
    http: {
      host: e.HTTP_HOST,
      port: e.HTTP_PORT,
      rateLimitPerMinute: e.API_RATE_LIMIT,
      tokenCacheTtlMs: e.API_TOKEN_CACHE_TTL * 1000,
      metricsToken: e.METRICS_TOKEN,
      dashboardSessionMs: e.DASHBOARD_SESSION_HOURS * 60 * 60 * 1000,
    },
    delivery: {
      backoffSeconds: e.DELIVERY_BACKOFF,
      maxAttempts: e.DELIVERY_MAX_ATTEMPTS,
      concurrency: e.DELIVERY_CONCURRENCY,
      projectConcurrency: e.DELIVERY_PROJECT_CONCURRENCY,
      upstreamConcurrency: e.DELIVERY_UPSTREAM_CONCURRENCY,
      connectTimeoutMs: e.DELIVERY_CONNECT_TIMEOUT * 1000,
      greetingTimeoutMs: e.DELIVERY_GREETING_TIMEOUT * 1000,
      directSmtpPort: e.DIRECT_SMTP_PORT,
      circuitFailures: e.DELIVERY_CIRCUIT_FAILURES,
      circuitCooldownMs: e.DELIVERY_CIRCUIT_COOLDOWN * 1000,
      destination: { concurrency: e.DESTINATION_CONCURRENCY, ratePerMinute: e.DESTINATION_RATE_PER_MINUTE },
      workerThreads: e.WORKER_THREADS,
      sweepIntervalMs: e.DELIVERY_SWEEP_INTERVAL * 1000,
      stalledTimeoutMs: e.DELIVERY_STALLED_TIMEOUT * 1000,
      bodyRetentionDays: e.BODY_RETENTION_DAYS,
    },
    auditRetentionDays: e.AUDIT_RETENTION_DAYS,
    eventRetentionDays: e.EVENT_RETENTION_DAYS,
    dnsServers: e.DNS_SERVERS,
    webhooks: {
      allowPrivate: e.WEBHOOK_ALLOW_PRIVATE,
      retryScheduleSeconds: e.WEBHOOK_RETRY_SCHEDULE,
      timeoutMs: e.WEBHOOK_TIMEOUT * 1000,
      disableAfterMs: e.WEBHOOK_DISABLE_AFTER * 1000,
      endpointConcurrency: e.WEBHOOK_ENDPOINT_CONCURRENCY,
    },
    bounces: {
      domain: e.BOUNCE_DOMAIN,
      inboundPort: e.INBOUND_PORT,
      maxMessageSize: e.INBOUND_MAX_MESSAGE_SIZE,
    },
    encryptionKey: e.ENCRYPTION_KEY,
    adminToken: e.ADMIN_TOKEN,
    upstreamPassword: e.UPSTREAM_PASSWORD,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT * 1000,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
  };
}

/**
 * Embedded mode generates ENCRYPTION_KEY and ADMIN_TOKEN once into DATA_DIR (mode 0600) and reuses
 * them on every start. `generated` lists what was created now, so the caller can print the new
 * admin token exactly once.
 */
export function resolveSecrets(config: Config): {
  config: ConfigWithSecrets;
  generated: ("adminToken" | "encryptionKey")[];
} {
  const generated: ("adminToken" | "encryptionKey")[] = [];
  const secretsDir = resolve(config.dataDir, "secrets");
  const readOrCreate = (file: string, create: () => string, what: "adminToken" | "encryptionKey"): string => {
    const path = resolve(secretsDir, file);
    try {
      return readFileSync(path, "utf8").trim();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    mkdirSync(secretsDir, { recursive: true, mode: 0o700 });
    const value = create();
    writeFileSync(path, `${value}\n`, { mode: 0o600, flag: "wx" });
    generated.push(what);
    return value;
  };
  const encryptionKey =
    config.encryptionKey ??
    Buffer.from(
      readOrCreate("encryption-key", () => randomBytes(32).toString("hex"), "encryptionKey"),
      "hex",
    );
  const adminToken =
    config.adminToken ??
    readOrCreate("admin-token", () => `pst_admin_${randomBytes(24).toString("base64url")}`, "adminToken");
  return { config: { ...config, encryptionKey, adminToken }, generated };
}

function readDotenv(cwd: string): EnvSource {
  try {
    return parseDotenv(readFileSync(resolve(cwd, ".env")));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new ConfigError(`.env: cannot be read (${(error as Error).message})`);
  }
}

function assertReadable(name: string, file: string): void {
  try {
    accessSync(file, constants.R_OK);
  } catch {
    throw new ConfigError(`${name}: cannot read ${file}`);
  }
}
