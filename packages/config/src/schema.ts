import { hostname } from "node:os";
import { z } from "zod";

/**
 * Every environment variable Postern reads, with its default and meaning. This table is the one
 * source of truth: `loadConfig` parses it and docs/configuration.md is checked against it.
 */

const port = z.coerce.number().int().min(0).max(65535, "must be a port number (0-65535)");
const positiveInt = z.coerce.number().int("must be a whole number").positive("must be greater than 0");
const seconds = z.coerce.number().positive("must be a number of seconds greater than 0");
const boolean = z
  .enum(["true", "false", "1", "0", "yes", "no"], { error: "must be true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const url = (protocols: string[]) =>
  z.string().refine(
    (value) => {
      try {
        return protocols.includes(new URL(value).protocol);
      } catch {
        return false;
      }
    },
    { error: `must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}` },
  );

/** 32 bytes given as 64 hex characters or as base64 (44 characters with padding). */
const encryptionKey = z.string().transform((value, ctx) => {
  const trimmed = value.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, "hex")
    : /^[A-Za-z0-9+/]{43}=?$/.test(trimmed)
      ? Buffer.from(trimmed, "base64")
      : undefined;
  if (bytes?.length !== 32) {
    ctx.addIssue({ code: "custom", message: "must be 32 bytes as hex or base64" });
    return z.NEVER;
  }
  return bytes;
});

const backoff = z.string().transform((value, ctx) => {
  const parts = value.split(",").map((s) => s.trim());
  const numbers = parts.map(Number);
  if (parts.length === 0 || numbers.some((n, i) => parts[i] === "" || !Number.isFinite(n) || n < 0)) {
    ctx.addIssue({ code: "custom", message: "must be a comma-separated list of seconds, e.g. 60,300,900" });
    return z.NEVER;
  }
  return numbers;
});

/**
 * DNS_SERVERS: comma-separated `ip[:port]` (IPv6 as `[ip]:port`), as node:dns's `setServers`
 * takes them; checked here so that a typo stops the process at start.
 */
const dnsServers = z.string().transform((value, ctx) => {
  const servers = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const valid = (server: string) =>
    /^(\d{1,3}\.){3}\d{1,3}(:\d{1,5})?$/.test(server) ||
    /^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(server) ||
    /^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$/.test(server);
  const bad = servers.find((server) => !valid(server));
  if (servers.length === 0 || bad !== undefined) {
    ctx.addIssue({
      code: "custom",
      message: `must be comma-separated ip[:port] addresses, e.g. 127.0.0.1:5353,[::1]:53${bad ? ` (not: ${bad})` : ""}`,
    });
    return z.NEVER;
  }
  return servers;
});

export interface VariableSpec {
  schema: z.ZodType;
  /** The default as a user would write it, or a sentence when it is computed. */
  default?: string;
  doc: string;
}

export const variables = {
  DATABASE_URL: {
    schema: url(["postgres:", "postgresql:"]).optional(),
    default: "embedded PostgreSQL in DATA_DIR",
    doc: "PostgreSQL connection string. Unset: an embedded PostgreSQL is started with its data in `DATA_DIR`.",
  },
  DATABASE_REPLICA_URL: {
    schema: url(["postgres:", "postgresql:"]).optional(),
    default: "none: every read goes to DATABASE_URL",
    doc: "A read-only streaming replica of `DATABASE_URL` for the API role's history reads (message lists and details, events, stats, audit log, suppressions list); every write and every other read stays on `DATABASE_URL`. Requires `DATABASE_URL`. See docs/operations.md, Read replica.",
  },
  REDIS_URL: {
    schema: url(["redis:", "rediss:"]).optional(),
    default: "a local redis-server started on demand",
    doc: "Redis connection string. Unset: `redis-server` from PATH is started on loopback with AOF persistence in `DATA_DIR`.",
  },
  REDIS_CLUSTER: {
    schema: boolean.default(false),
    default: "false",
    doc: "`REDIS_URL` is a node of a Redis Cluster (any node, or a configuration endpoint): the other nodes are discovered from it, and keys a script or a BullMQ queue uses together carry a hash tag so that they share a slot (docs/operations.md, Redis Cluster).",
  },
  REDIS_KEY_PREFIX: {
    schema: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/, "must be letters, digits, '_', '.' or '-'")
      .default("postern"),
    default: "postern",
    doc: "Prefix of every Redis key Postern writes (queues, quotas, limiters), so several installations can share one Redis.",
  },
  DATA_DIR: {
    schema: z.string().min(1).default("./.postern"),
    default: "./.postern",
    doc: "Embedded database files, redis-server data, the generated development TLS certificate and generated secrets.",
  },
  SMTP_HOST: {
    schema: z.string().min(1).default("0.0.0.0"),
    default: "0.0.0.0",
    doc: "Listen address for SMTP and SMTPS.",
  },
  SMTP_PORT: {
    schema: port.default(2525),
    default: "2525",
    doc: "SMTP with STARTTLS (submission style; 587 in production).",
  },
  SMTPS_PORT: {
    schema: port.default(2465),
    default: "2465",
    doc: "SMTP over implicit TLS (465 in production); `0` disables it.",
  },
  SMTP_HOSTNAME: {
    schema: z.string().min(1).default(hostname()),
    default: "the machine's hostname",
    doc: "Name in the SMTP banner, the EHLO reply and Received headers.",
  },
  SMTP_TLS_CERT: {
    schema: z.string().min(1).optional(),
    default: "a self-signed certificate generated into DATA_DIR",
    doc: "PEM certificate (chain) file for STARTTLS and SMTPS. Set together with `SMTP_TLS_KEY`. Reloaded on SIGHUP.",
  },
  SMTP_TLS_KEY: {
    schema: z.string().min(1).optional(),
    default: "generated with the certificate",
    doc: "PEM private key file for `SMTP_TLS_CERT`.",
  },
  SMTP_PROXY_PROTOCOL: {
    schema: boolean.default(false),
    default: "false",
    doc: "Expect a PROXY protocol version 1 header on every SMTP connection (behind a TCP load balancer such as HAProxy with `send-proxy`; version 2, the only one AWS NLB sends, is not read).",
  },
  SMTP_MAX_CONNECTIONS: {
    schema: positiveInt.default(1000),
    default: "1000",
    doc: "Simultaneous SMTP connections per process, SMTP and SMTPS together, counted from TCP accept (a TLS handshake in progress counts); further ones are closed at once, with `421 4.7.0` on `SMTP_PORT`.",
  },
  SMTP_MAX_CONNECTIONS_PER_IP: {
    schema: positiveInt.default(100),
    default: "100",
    doc: "Simultaneous SMTP connections per client IP per process, counted like `SMTP_MAX_CONNECTIONS` (behind `SMTP_PROXY_PROTOCOL`, once the PROXY header names the client); further ones are closed at once, with `421 4.7.0` on `SMTP_PORT`.",
  },
  SMTP_IDLE_TIMEOUT: {
    schema: seconds.default(300),
    default: "300",
    doc: "Seconds an SMTP client may stay silent before `421 4.4.2` and disconnect (RFC 5321 §4.5.3.2 asks for at least 5 minutes).",
  },
  SMTP_TLS_HANDSHAKE_TIMEOUT: {
    schema: seconds.default(10),
    default: "10",
    doc: "Deadline in seconds for a TLS handshake: from TCP accept until the SMTP session starts on `SMTPS_PORT`, and from `STARTTLS` until TLS is up (behind `SMTP_PROXY_PROTOCOL`, reading the PROXY header counts too, on both ports). A client that has not finished by then is disconnected, without a reply (none can be sent in a handshake).",
  },
  SMTP_AUTH_DEADLINE: {
    schema: seconds.default(60),
    default: "60",
    doc: "Seconds from the greeting within which a client must authenticate, however active it is; then `421 4.4.2` and disconnect.",
  },
  SMTP_DATA_DEADLINE: {
    schema: seconds.default(300),
    default: "300",
    doc: "Seconds from `354` within which the whole message must have arrived (its final `.`), however steadily it trickles in; then `421 4.4.2`, disconnect, and nothing is stored. 300 s lets a 25 MiB message through at 700 kbit/s.",
  },
  SMTP_HARD_ERROR_LIMIT: {
    schema: positiveInt.default(20),
    default: "20",
    doc: "Refused commands (any `4xx` or `5xx` reply) a session may collect without a message being accepted, as Postfix's `smtpd_hard_error_limit`; the reply that reaches it is followed by `421 4.7.0` and disconnect. A `250` to `DATA` starts the count again.",
  },
  SMTP_AUTH_CACHE_TTL: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds a successful SMTP AUTH is remembered in memory (keyed by an HMAC of key and secret) before bcrypt runs again. Revocations published by the API and CLI apply at once; a revocation written straight into the database applies within this time.",
  },
  SMTP_AUTH_FAILURES_PER_IP: {
    schema: positiveInt.default(20),
    default: "20",
    doc: "Failed SMTP AUTH attempts allowed per client address (an IPv4 address, or an IPv6 /64) within 15 minutes; then AUTH from that address gets `421 4.7.0` until the window ends, except with an API key that authenticated from that address within the last 7 days (still limited by `SMTP_AUTH_FAILURES_PER_KEY`).",
  },
  SMTP_AUTH_FAILURES_PER_KEY: {
    schema: positiveInt.default(10),
    default: "10",
    doc: "Failed SMTP AUTH attempts allowed for one API key (username) from one client address within 15 minutes; then AUTH with that key from that address gets `421 4.7.0` until the window ends, even with the right secret. Other addresses are not affected: a key is never locked out as a whole.",
  },
  SMTP_INFLOW_BACKLOG: {
    schema: z.coerce.number().int("must be a whole number").min(0, "must be 0 or more").default(250),
    default: "250",
    doc: "In-flow control, like Postfix's `in_flow_delay`: while this many messages or more of a project wait for a delivery worker, a new transaction of that project is held at `MAIL FROM` (for at most `SMTP_INFLOW_DELAY`), so its clients slow down to its delivery rate instead of its queue growing without bound. Each project is held for its own backlog only: another project's backlog (a stuck upstream) never slows it. `0` disables it.",
  },
  SMTP_INFLOW_DELAY: {
    schema: seconds.max(60, "must be at most 60 seconds (clients time out waiting for a reply)").default(1),
    default: "1",
    doc: "Longest time in seconds (fractions allowed) in-flow control holds one transaction; then it proceeds. In-flow control slows clients down, it never refuses mail.",
  },
  SMTP_DATA_MEMORY: {
    schema: positiveInt.default(16777216),
    default: "16777216",
    doc: "Message bytes that the SMTP sessions of a process hold in memory (16 MiB), from DATA until the message is stored, besides the session that has held bytes longest. A session that would go over it stops reading its DATA until stored messages free theirs (TCP makes the client wait; nothing is refused). The session that has held bytes longest always goes on and is not counted, so a message up to `MAX_MESSAGE_SIZE` gets through whatever this is, a slow one does not hold the others back, and the process holds at most this plus one such message (and the piece of DATA each waiting session had already read). A session is admitted for the size messages have had lately (a moving average), so the bound holds whole messages rather than parts of many.",
  },
  HTTP_HOST: {
    schema: z.string().min(1).default("0.0.0.0"),
    default: "0.0.0.0",
    doc: "Listen address for the REST API, its health probes and metrics (also of a process that runs only the SMTP or worker role). All interfaces by default, like `SMTP_HOST`, because project owners call `/v1` from their own machines; `127.0.0.1` keeps the port on the host (behind a reverse proxy). Where the port is reachable from outside, set `METRICS_TOKEN` (see docs/security.md, HTTP exposure).",
  },
  HTTP_PORT: {
    schema: port.default(8080),
    default: "8080",
    doc: "REST API, health probes and metrics.",
  },
  API_RATE_LIMIT: {
    schema: positiveInt.default(600),
    default: "600",
    doc: "Requests per minute each project API token may make to `/v1`; beyond it the API answers `429` with `Retry-After`.",
  },
  API_TOKEN_CACHE_TTL: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds a valid project API token, and its project's sending policy, are remembered in memory by the API. Revocations, suspensions and project changes made through the API or CLI apply at once on every node; one written straight into the database applies within this time.",
  },
  DASHBOARD_SESSION_HOURS: {
    schema: positiveInt.max(720, "must be at most 720 (30 days)").default(12),
    default: "12",
    doc: "Hours a dashboard session lasts from sign-in (`POST /session`); then the browser signs in again. A session also ends at once when its API token is revoked or its project deleted, and on sign-out.",
  },
  METRICS_TOKEN: {
    schema: z.string().min(16, "must be at least 16 characters").optional(),
    default: "unset: /metrics is open",
    doc: "Bearer token that `GET /metrics` requires when set (`Authorization: Bearer <token>`, Prometheus's `authorization` setting); without it the answer is `401`. Unset, `/metrics` answers anyone who reaches `HTTP_HOST:HTTP_PORT`.",
  },
  ENCRYPTION_KEY: {
    schema: encryptionKey.optional(),
    default: "generated into DATA_DIR in embedded mode; required otherwise",
    doc: "32 bytes (64 hex characters or base64) for AES-256-GCM of stored upstream passwords.",
  },
  ADMIN_TOKEN: {
    schema: z.string().min(32, "must be at least 32 characters").optional(),
    default: "generated and printed at first embedded start; required otherwise",
    doc: "Bearer token of the operator API (`/admin`).",
  },
  UPSTREAM_PASSWORD: {
    schema: z.string().min(1, "must not be empty").optional(),
    default: "unset",
    doc: "Read only by the CLI (`project create` and `project update` with `--upstream`): the upstream URL's password, so that it never appears on a command line where `ps` shows it. `--upstream-password-file` and `--ask-upstream-password` are the other ways.",
  },
  MAX_MESSAGE_SIZE: {
    schema: positiveInt.default(26214400),
    default: "26214400",
    doc: "Largest accepted message in bytes (25 MiB), advertised in EHLO `SIZE`; larger messages get `552 5.3.4`.",
  },
  SMTP_BARE_NEWLINE: {
    schema: z.enum(["normalize", "reject"], { error: "must be normalize or reject" }).default("normalize"),
    default: "normalize",
    doc: "A message line ending in a bare LF: `normalize` stores it as CRLF (Postfix's `smtpd_forbid_bare_newline = normalize`), `reject` refuses the message with `521 5.5.2` and disconnects. Either way only `<CR><LF>.<CR><LF>` ends DATA, and a bare CR or a line that another server could read as the end of DATA (`<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>`) is refused with `521 5.5.2`.",
  },
  DELIVERY_BACKOFF: {
    schema: backoff.default([60, 300, 900, 3600, 14400]),
    default: "60,300,900,3600,14400",
    doc: "Seconds between delivery attempts of a deferred message; the last value repeats. Jitter of ±10% is added.",
  },
  DELIVERY_MAX_ATTEMPTS: {
    schema: positiveInt.default(10),
    default: "10",
    doc: "After this many attempts without success a message is `failed`.",
  },
  DELIVERY_CONCURRENCY: {
    schema: positiveInt.default(50),
    default: "50",
    doc: "Deliveries in flight per worker (each worker thread of `postern start`, each `postern start worker` process).",
  },
  DELIVERY_PROJECT_CONCURRENCY: {
    schema: positiveInt.default(20),
    default: "20",
    doc: "Connections to a project's upstream (messages being read and sent for the project at once) per worker, so one project's backlog cannot starve the others. 20 is Postfix's default destination concurrency.",
  },
  DELIVERY_UPSTREAM_CONCURRENCY: {
    schema: positiveInt.default(30),
    default: "30",
    doc: "Connections to one upstream (host and port), all projects sending to it together, per worker. Below `DELIVERY_CONCURRENCY`, so that an upstream that hangs leaves worker slots to the others.",
  },
  DELIVERY_CONNECT_TIMEOUT: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds a connection to an upstream may take to be ready for a message: DNS lookup, TCP connection, TLS, greeting, EHLO and STARTTLS together (Postfix's `smtp_connect_timeout` is 30 s for the TCP connection alone). Then the attempt is deferred and counts toward the upstream's circuit breaker (`DELIVERY_CIRCUIT_FAILURES`).",
  },
  DELIVERY_GREETING_TIMEOUT: {
    schema: seconds.default(15),
    default: "15",
    doc: "Seconds to wait for an upstream's greeting once the TCP (and `smtps://` TLS) connection is up, within `DELIVERY_CONNECT_TIMEOUT`. RFC 5321 suggests 5 minutes for an MTA talking to any server; a relay's own upstream that stays silent for 15 s is stuck. Then as `DELIVERY_CONNECT_TIMEOUT`.",
  },
  DIRECT_SMTP_PORT: {
    schema: port.default(25),
    default: "25",
    doc: "Port of the MX hosts that direct delivery connects to. 25 everywhere but in tests, where SMTP sinks on 127.0.0.x stand in for MX hosts.",
  },
  DELIVERY_CIRCUIT_FAILURES: {
    schema: positiveInt.default(5),
    default: "5",
    doc: 'Failures in a row to connect to an upstream (refused, timed out, no or a refusing greeting, TLS failed) after which a worker suspends it: its deliveries are deferred without a connection ("delivery temporarily suspended") for `DELIVERY_CIRCUIT_COOLDOWN`, then one delivery probes it.',
  },
  DELIVERY_CIRCUIT_COOLDOWN: {
    schema: seconds.default(60),
    default: "60",
    doc: "Seconds a suspended upstream is left alone before one delivery probes it (see `DELIVERY_CIRCUIT_FAILURES`).",
  },
  DESTINATION_CONCURRENCY: {
    schema: z.coerce.number().int("must be a whole number").min(0, "must be 0 or more").default(0),
    default: "0",
    doc: "Deliveries in flight at once to one destination (a recipient domain for direct delivery, an upstream's host and port otherwise), all projects and all workers together (counted in Redis). `0`: no cap. A route's `limits` overrides it. Lowered by half when the destination answers `421` or `4.7.x` and raised back as it accepts mail again (docs/routing.md, Throttling).",
  },
  DESTINATION_RATE_PER_MINUTE: {
    schema: z.coerce.number().int("must be a whole number").min(0, "must be 0 or more").default(0),
    default: "0",
    doc: "Deliveries started per minute to one destination, all projects and workers together. `0`: no cap. A route's `limits` overrides it; a delivery over the rate goes back to the queue until the minute allows it.",
  },
  DNS_SERVERS: {
    schema: dnsServers.optional(),
    default: "unset: the system's resolvers (/etc/resolv.conf)",
    doc: "DNS resolvers Postern asks for TXT, MX, A and AAAA records (verifying a domain's DKIM, SPF and DMARC records; direct delivery, docs/routing.md), comma-separated `ip[:port]` (IPv6 as `[ip]:port`), e.g. `127.0.0.1:5353`.",
  },
  BOUNCE_DOMAIN: {
    schema: z
      .string()
      .toLowerCase()
      .regex(
        /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/,
        "must be a domain name like bounces.example.com",
      )
      .optional(),
    default: "unset: no VERP, no inbound role",
    doc: 'Domain of VERP return paths (docs/bounces.md). Set, a project with `returnPath: "verp"` sends with the envelope sender `bounce+<signed token>@BOUNCE_DOMAIN`, and the `inbound` role (run by `npm start` too) receives the bounces and complaints sent there. Its MX record must point at the host of the `inbound` role (`POST /v1/domains` answers the record to publish).',
  },
  INBOUND_PORT: {
    schema: port.default(2526),
    default: "2526",
    doc: "Port of the `inbound` role (25 in production: the MX of `BOUNCE_DOMAIN` is reached there), on `SMTP_HOST`. No AUTH; STARTTLS with the certificate of `SMTP_TLS_CERT` (or the generated one).",
  },
  INBOUND_MAX_MESSAGE_SIZE: {
    schema: positiveInt.default(10485760),
    default: "10485760",
    doc: "Largest report the `inbound` role accepts in bytes (10 MiB), advertised in EHLO `SIZE`; larger ones get `552 5.3.4`. Bounces quote at most part of the original (Postfix: 50 kB by default), so reports are far smaller.",
  },
  WORKER_THREADS: {
    schema: z.coerce.number().int("must be a whole number").min(0, "must be 0 or more").default(1),
    default: "1",
    doc: "Delivery worker threads that `postern start` runs when it runs the worker role together with other roles (as `npm start` does), so SMTP and delivery use separate cores in one process. `0` runs the worker on the main thread.",
  },
  DELIVERY_SWEEP_INTERVAL: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds between sweeps that re-queue `queued` and due `deferred` messages without a live job (crash between commit and enqueue, Redis data lost) and prune old bodies.",
  },
  DELIVERY_STALLED_TIMEOUT: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds within which a delivery whose worker died (killed, lost its network) is taken up again by another worker (its job's lock lives half of it and is checked every half).",
  },
  BODY_RETENTION_DAYS: {
    schema: z.coerce.number().min(0, "must be 0 or more days").default(7),
    default: "7",
    doc: "Days message bodies of delivered and failed messages are kept (metadata and attempts stay). Pending messages are never pruned. `0` keeps bodies forever.",
  },
  AUDIT_RETENTION_DAYS: {
    schema: z.coerce
      .number()
      .int("must be a whole number of days")
      .min(0, "must be 0 or more days")
      .default(90),
    default: "90",
    doc: "Days audit events are kept; older ones are deleted by the delivery worker's sweep (every `DELIVERY_SWEEP_INTERVAL`), oldest first, at most 5,000 rows a statement. `0` keeps them forever.",
  },
  EVENT_RETENTION_DAYS: {
    schema: z.coerce
      .number()
      .int("must be a whole number of days")
      .min(0, "must be 0 or more days")
      .default(90),
    default: "90",
    doc: "Days message events (`GET /v1/events`, `GET /v1/messages/:id/events`) are kept; older ones are deleted by the delivery worker's sweep as audit events are, oldest first, at most 5,000 rows a statement. The messages stay. `0` keeps them forever.",
  },
  WEBHOOK_ALLOW_PRIVATE: {
    schema: boolean.default(false),
    default: "false",
    doc: "Allow webhook URLs whose host is or resolves to a loopback, private, link-local, unspecified or other non-public address (IPv4, IPv6 and IPv4-mapped IPv6). Off, such URLs are refused with `422` when an endpoint is created or changed, and every connection is checked again against the address it is made to (DNS rebinding). For endpoints on your own network, and tests.",
  },
  WEBHOOK_RETRY_SCHEDULE: {
    schema: backoff.default([5, 300, 1800, 7200, 18000, 36000, 36000]),
    default: "5,300,1800,7200,18000,36000,36000",
    doc: "Seconds before each retry of a webhook delivery that got no 2xx answer (or none within `WEBHOOK_TIMEOUT`), comma-separated, jitter of ±10% added; after the last retry fails the delivery is `failed` (replay it by API or CLI). The default makes 8 attempts over about 27.6 hours.",
  },
  WEBHOOK_TIMEOUT: {
    schema: seconds.default(10),
    default: "10",
    doc: "Seconds a webhook endpoint has to answer a POST, the whole exchange (connection, TLS, request, answer); then the attempt fails and is retried.",
  },
  WEBHOOK_DISABLE_AFTER: {
    schema: seconds.default(432000),
    default: "432000",
    doc: 'Seconds (5 days) after which an endpoint whose every attempt has failed since is disabled, with a `webhook.disabled` audit event; its pending deliveries wait until it is enabled again (`PATCH /v1/webhooks/:id {"enabled": true}`).',
  },
  WEBHOOK_ENDPOINT_CONCURRENCY: {
    schema: positiveInt.default(10),
    default: "10",
    doc: "Requests in flight to one webhook endpoint, every worker together: a slow endpoint ties up at most this many, and never another endpoint's.",
  },
  SHUTDOWN_TIMEOUT: {
    schema: seconds.default(30),
    default: "30",
    doc: "Seconds a graceful shutdown waits for in-flight SMTP transactions and deliveries.",
  },
  LOG_LEVEL: {
    schema: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    default: "info",
    doc: "pino log level.",
  },
  LOG_FORMAT: {
    schema: z.enum(["auto", "pretty", "json"], { error: "must be auto, pretty or json" }).default("auto"),
    default: "auto",
    doc: "How log lines are written: `json` (one JSON object per line, for log collectors), `pretty` (a time, a level and the message on one line, for people; colored on a terminal), or `auto`: `pretty` when the log's destination (stdout; stderr for the operator CLI) is a terminal, `json` otherwise. The fields and the redaction of secrets are the same in both.",
  },
} satisfies Record<string, VariableSpec>;

export type VariableName = keyof typeof variables;

export const environmentSchema = z.object(
  Object.fromEntries(Object.entries(variables).map(([name, spec]) => [name, spec.schema])) as {
    [K in VariableName]: (typeof variables)[K]["schema"];
  },
);

export type Environment = z.output<typeof environmentSchema>;
