/**
 * The relays under test: Postern all-in-one as a child process on a fresh DATA_DIR, and a private
 * Postfix (bench/postfix/postfix.sh). Each gives its SMTP port, the logins to use, and the process
 * groups whose CPU and memory the report shows.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { issueApiToken, issueSmtpCredential, smtpKeyPrefix } from "@postern/auth";
import { createDatabase, type Database } from "@postern/db";
import { createDomainService } from "@postern/dkim";
import { freePort, freePorts } from "@postern/embedded";
import { createRouteService } from "@postern/projects";
import { parseUpstreamUrl } from "@postern/relay";
import { type Rule, rulesSchema } from "@postern/rules";
import { createWebhookService, subscribableEventTypes } from "@postern/webhooks";
import { Redis } from "ioredis";
import { startForwarderProcess } from "./children";
import { startBenchDns } from "./dns";
import type { ProcessGroup } from "./procstat";
import { type SmtpLogin, waitForPort } from "./protocol";

const run = promisify(execFile);

/** Builds dist/postern.mjs from the sources of this checkout (scripts/bundle.mjs, about a second). */
async function bundlePostern(repositoryRoot: string): Promise<void> {
  await run(process.execPath, [join(repositoryRoot, "scripts/bundle.mjs")]);
}

/**
 * `ceiling`: no relay, the load generator straight into the sink: what the machine can show at best.
 * `forwarder`: smtp-server and Postern's upstream pool with nothing stored (bench/forwarder.ts).
 * `postfix`: Postfix with its stock concurrency (issue 6's reference); `postfix-tuned`: with the
 * concurrency an operator relaying to one smarthost sets (issue 30's reference, postfix.sh).
 */
export type PeerName = "ceiling" | "forwarder" | "postfix" | "postfix-tuned" | "postern";

export interface Peer {
  name: PeerName;
  /** Its SMTP listeners: one, or one per SMTP process; the load generator spreads its connections over them. */
  smtpPorts: number[];
  /** The main login (pooled, fresh, cached AUTH); none: plain SMTP without TLS (the ceiling). */
  login: SmtpLogin | undefined;
  /** Distinct logins, each used once, for the uncached (bcrypt) AUTH path. */
  freshLogins: SmtpLogin[];
  /**
   * A further tenant with an upstream of its own (`stuck-neighbour`), and its login; missing for
   * relays that send every client's mail to one upstream.
   */
  addProject?(name: string, upstreamPort: number, options?: { rules?: Rule[] }): Promise<SmtpLogin>;
  /**
   * HTTP submission (`POST /v1/messages`, `http-10k`) on this port with this project API token;
   * missing for relays that speak only SMTP.
   */
  httpPort?: number;
  apiToken?: string;
  /**
   * Signs every message of the main login whose From is of `domain` with a new, active RSA-2048
   * key, until the function it answers is called (`pooled-10k-dkim`); missing for relays without
   * DKIM signing.
   */
  signWithDkim?(domain: string): Promise<() => Promise<void>>;
  /**
   * Delivers every message of the main login directly, to the MX host of its recipient's domain
   * (the sink, through the bench's DNS server), until the function it answers is called
   * (`pooled-10k-direct`); missing for relays without direct delivery.
   */
  deliverDirect?(): Promise<() => Promise<void>>;
  /**
   * POSTs every event type of the main login's project to `url` (a webhook endpoint), until the
   * function it answers is called (`pooled-10k-webhooks`); missing for relays without webhooks.
   */
  subscribeWebhooks?(url: string): Promise<() => Promise<void>>;
  /** Why the scenarios cannot run (e.g. no SMTP listener yet); the peer is up for the rest. */
  unavailable?: string;
  /** CPU is reported per group; the first group is the relay itself. */
  groups: ProcessGroup[];
  /** Processes whose peak RSS is reported. */
  rssProcesses(): { name: string; pid: number }[];
  version: Record<string, string>;
  stop(): Promise<void>;
}

function pidFromFile(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, "utf8").split("\n")[0]?.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(
      () => fail(new Error(`postern did not start in ${timeoutMs} ms:\n${output}`)),
      timeoutMs,
    );
    // Once started, its output is read and dropped: kept, it grew without end and was searched
    // again at every chunk, costing the harness CPU that the relays share; unread, a full pipe
    // would block Postern's log writes.
    const settle = () => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      child.off("error", onError);
      child.stdout?.resume();
      child.stderr?.resume();
    };
    const fail = (error: Error) => {
      settle();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (pattern.test(output)) {
        settle();
        resolve();
      }
    };
    const onExit = (code: number | null) =>
      fail(new Error(`postern exited with ${code} while starting:\n${output}`));
    const onError = (error: Error) => fail(new Error(`postern could not be started: ${error.message}`));
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
    child.once("error", onError);
  });
}

/**
 * Credentials for the bcrypt path. They share one secret (and so one bcrypt hash, computed once)
 * under distinct keys: every AUTH is still a cache miss, because the cache is keyed by (key, secret).
 */
async function createFreshCredentials(db: Database, projectId: string, count: number): Promise<SmtpLogin[]> {
  const shared = await issueSmtpCredential();
  const keys = Array.from(
    { length: count },
    () => `${smtpKeyPrefix}${randomBytes(24).toString("base64url")}`,
  );
  await db.smtpCredential.createMany({
    data: keys.map((key) => ({ projectId, key, secretHash: shared.secretHash })),
  });
  return keys.map((username) => ({ username, password: shared.secret }));
}

/** A project whose upstream is `upstreamPort`, with one SMTP credential (and `rules`, if given). */
async function createBenchProject(db: Database, name: string, upstreamPort: number, rules?: Rule[]) {
  const upstream = parseUpstreamUrl(`smtp://127.0.0.1:${upstreamPort}`);
  // Quotas far above what one machine can send, so the benchmark measures the relay, not its limits.
  const project = await db.project.create({
    data: {
      name,
      quotaPerMinute: 100_000_000,
      quotaDaily: 1_000_000_000,
      maxRecipients: 50,
      upstreamUrl: upstream.publicUrl,
    },
  });
  // A new project: no node has its rules cached yet, so none needs telling.
  if (rules)
    await db.ruleSet.create({ data: { projectId: project.id, version: 1, rules: rulesSchema.parse(rules) } });
  const credential = await issueSmtpCredential();
  await db.smtpCredential.create({
    data: { projectId: project.id, key: credential.key, secretHash: credential.secretHash },
  });
  return { project, login: { username: credential.key, password: credential.secret } };
}

export interface PosternPeer extends Peer {
  httpPort: number;
  projectId: string;
  apiToken: string;
  db: Database;
}

/**
 * Postern's roles in processes of their own (`--split-roles`): `postern start api`, which owns the
 * embedded PostgreSQL and Redis, then `smtp` processes running `postern start smtp` (each on a
 * port of its own: Node 20 cannot share one with SO_REUSEPORT) and `worker` processes running
 * `postern start worker`, all attached to the first one's services.
 */
export interface PosternProcesses {
  smtp: number;
  worker: number;
}

export async function startPostern(options: {
  sinkPort: number;
  /** The recipients' domain: the bench's DNS server gives it an MX host at the sink's address. */
  recipientDomain: string;
  freshLogins: number;
  repositoryRoot: string;
  /** Where `node --cpu-prof` writes Postern's profile when it exits; unset: no profiling. */
  profileDir?: string;
  /** The roles in processes of their own; unset: all in one process (`postern start`). */
  processes?: PosternProcesses;
}): Promise<PosternPeer> {
  const dataDir = await mkdtemp(join(tmpdir(), "postern-bench-"));
  // PostgreSQL runs as its own user when we are root: it must reach its directory.
  await chmod(dataDir, 0o755);
  // Stopped in reverse order of starting: the database client, the attached processes, then the
  // first Postern process with its embedded services. Also what a failed start runs, so nothing is
  // left behind.
  const teardown: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const step of teardown) await step().catch(() => {});
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const split = options.processes;
    const smtpProcesses = split?.smtp ?? 1;
    const attachedProcesses = split ? split.smtp + split.worker : 0;
    // The API's port, each SMTP listener's, then the health probes' of each attached process.
    const [httpPort, ...ports] = (await freePorts(1 + smtpProcesses + attachedProcesses)) as [
      number,
      ...number[],
    ];
    const smtpPorts = ports.slice(0, smtpProcesses);
    const probePorts = ports.slice(smtpProcesses);
    const dns = await startBenchDns(options.recipientDomain);
    teardown.unshift(() => dns.stop());
    // Node refuses --cpu-prof in NODE_OPTIONS: it goes on the command line.
    const profile = options.profileDir ? ["--cpu-prof", `--cpu-prof-dir=${options.profileDir}`] : [];
    // Postern as production runs it (the Dockerfile, `npm start`): the bundle, plain node. A profiled
    // run uses the sources through tsx, so that the profile names apps/ and packages/ files.
    if (!options.profileDir) await bundlePostern(options.repositoryRoot);
    const postern = join(
      options.repositoryRoot,
      options.profileDir ? "apps/cli/bin/postern-sources.js" : "dist/postern.mjs",
    );
    const base = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      // Production's level: a line per session, accepted and delivered message, as Postfix's
      // maillog has in its runs.
      LOG_LEVEL: "info",
      HTTP_HOST: "127.0.0.1",
      // The malloc and V8 heap settings production runs with (Dockerfile ENV, `npm start`).
      MALLOC_ARENA_MAX: "2",
      MALLOC_MMAP_THRESHOLD_: "16384",
      NODE_OPTIONS: "--max-old-space-size=512",
      // Direct delivery (`pooled-10k-direct`) finds the sink as the recipients' MX host.
      DNS_SERVERS: dns.address,
      // `pooled-10k-webhooks` POSTs to a receiver on a loopback port.
      WEBHOOK_ALLOW_PRIVATE: "true",
      DIRECT_SMTP_PORT: String(options.sinkPort),
    };
    const smtpListener = (port: number) => ({
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: String(port),
      SMTPS_PORT: "0",
      SMTP_HOSTNAME: "bench.postern.local",
    });
    /** A Postern process named as the CPU and RSS columns show it; stopped before what started earlier. */
    const startProcess = (name: string, roles: string[], env: Record<string, string>) => {
      const child = spawn(process.execPath, [...profile, postern, "start", ...roles], {
        cwd: options.repositoryRoot,
        env: { ...base, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      teardown.unshift(() => stopChild(child));
      return { name, child, started: waitForOutput(child, /Postern is running/, 120_000) };
    };
    // The first process owns DATA_DIR's embedded services (and, split, runs the API alone).
    const owner = startProcess(split ? "api" : "postern", split ? ["api"] : [], {
      DATA_DIR: dataDir,
      HTTP_PORT: String(httpPort),
      // `http-10k` sends thousands of requests a minute with one token: the API's per-token
      // limit (600 a minute by default) would measure the limiter, not the submission path.
      API_RATE_LIMIT: "1000000000",
      ...(split ? {} : smtpListener(smtpPorts[0] as number)),
    });
    await owner.started;
    const { databaseUrl, redisUrl } = JSON.parse(await readFile(join(dataDir, "embedded.json"), "utf8")) as {
      databaseUrl: string;
      redisUrl: string;
    };
    // The other processes attach to the first one's embedded services, with the secrets it generated.
    const secret = (name: string) => readFile(join(dataDir, "secrets", name), "utf8").then((v) => v.trim());
    const attachedRoles = split
      ? [
          ...smtpPorts.map((port, i) => ({ name: `smtp${i + 1}`, role: "smtp", env: smtpListener(port) })),
          ...Array.from({ length: split.worker }, (_, i) => ({
            name: `worker${i + 1}`,
            role: "worker",
            env: {},
          })),
        ]
      : [];
    const attachment = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      ENCRYPTION_KEY: await secret("encryption-key"),
      ADMIN_TOKEN: await secret("admin-token"),
    };
    const attached = attachedRoles.map(({ name, role, env }, i) =>
      startProcess(name, [role], {
        ...attachment,
        // A DATA_DIR of its own: another process's DATA_DIR is locked (and holds nothing it needs).
        DATA_DIR: join(dataDir, name),
        // Its health probes and metrics.
        HTTP_PORT: String(probePorts[i]),
        ...env,
      }),
    );
    await Promise.all(attached.map((p) => p.started));
    const processes = [owner, ...attached].map(({ name, child }) => ({ name, pid: child.pid as number }));
    const db = createDatabase(databaseUrl);
    teardown.unshift(() => db.$disconnect());
    const { project, login } = await createBenchProject(db, "benchmark", options.sinkPort);
    const token = issueApiToken();
    await db.apiToken.create({
      data: { projectId: project.id, tokenHash: token.tokenHash, prefix: token.prefix },
    });
    const freshLogins = await createFreshCredentials(db, project.id, options.freshLogins);

    const postmaster = () => pidFromFile(join(dataDir, "postgres", "postmaster.pid"));
    const redis = () => pidFromFile(join(dataDir, "redis", "redis.pid"));
    const services = () => [postmaster(), redis()].filter((p): p is number => p !== undefined);
    const pgVersion = await db.$queryRawUnsafe<{ server_version: string }[]>("SHOW server_version");
    const redisVersion = (await run("redis-server", ["--version"])).stdout.match(/v=(\S+)/)?.[1] ?? "unknown";

    // A role still missing on this branch is reported, not guessed around.
    const unavailable = await Promise.all(smtpPorts.map((port) => waitForPort(port, 2000))).then(
      () => undefined,
      () => "Postern has no SMTP listener (the smtp role is not on this branch)",
    );

    return {
      name: "postern",
      smtpPorts,
      unavailable,
      httpPort,
      projectId: project.id,
      apiToken: token.token,
      db,
      login,
      freshLogins,
      addProject: async (name, upstreamPort, projectOptions) =>
        (await createBenchProject(db, name, upstreamPort, projectOptions?.rules)).login,
      signWithDkim: async (domain) => {
        // The key is made active as a verify would (through the same service), the look-up
        // answering what the domain asks to publish: the scenario measures signing, not DNS.
        const redis = new Redis(redisUrl);
        const domains = createDomainService({
          db,
          redis,
          config: {
            encryptionKey: Buffer.from(await secret("encryption-key"), "hex"),
            redisKeyPrefix: "postern",
            dnsServers: undefined,
            smtp: { hostname: "bench.postern.local" },
          },
          lookupTxt: async (name) =>
            (created.ok ? created.value.records : [])
              .filter((record) => record.name === name)
              .map((record) => record.value),
        });
        const by = { actor: "bench" };
        const created = await domains.create(project.id, { domain, algorithm: "rsa" }, by);
        if (!created.ok) throw new Error(`DKIM domain for the bench: ${created.message}`);
        const verified = await domains.verify(project.id, created.value.id, by);
        if (verified?.activated.length !== 1) throw new Error("DKIM key of the bench not activated");
        return async () => {
          await domains.remove(project.id, created.value.id, by);
          redis.disconnect();
        };
      },
      deliverDirect: async () => {
        // Through the route service, as the API's PUT /v1/routes: the SMTP side reads the new
        // routes version with the project's policy, which the service's invalidation drops.
        const redis = new Redis(redisUrl);
        const routes = createRouteService({
          db,
          redis,
          config: {
            encryptionKey: Buffer.from(await secret("encryption-key"), "hex"),
            redisKeyPrefix: "postern",
          },
        });
        const by = { actor: "bench" };
        const replace = async (input: Parameters<typeof routes.replace>[1]) => {
          const replaced = await routes.replace(project.id, input, by);
          if (!replaced.ok) throw new Error(`bench routes: ${replaced.message}`);
          return replaced.value.version;
        };
        const version = await replace({ version: 0, routes: [{ match: "*", target: { type: "direct" } }] });
        return async () => {
          await replace({ version, routes: [] });
          redis.disconnect();
        };
      },
      subscribeWebhooks: async (url) => {
        // Through the service, as POST /v1/webhooks: the workers' dispatcher picks the endpoint up.
        const webhooks = createWebhookService({
          db,
          config: {
            encryptionKey: Buffer.from(await secret("encryption-key"), "hex"),
            webhooks: { allowPrivate: true },
          },
        });
        const by = { actor: "bench" };
        const created = await webhooks.create(project.id, { url, events: [...subscribableEventTypes] }, by);
        if (!created.ok) throw new Error(`bench webhook: ${created.message}`);
        return async () => {
          await webhooks.remove(project.id, created.value.id, by);
        };
      },
      groups: [
        // The embedded services are the owner's children, counted in their own groups.
        ...processes.map(({ name, pid }, i) => ({
          name,
          roots: () => [pid],
          exclude: i === 0 ? services : undefined,
        })),
        { name: "postgres", roots: () => [postmaster()].filter((p): p is number => p !== undefined) },
        { name: "redis", roots: () => [redis()].filter((p): p is number => p !== undefined) },
      ],
      // All in one, the delivery worker is a thread of `postern start` (WORKER_THREADS).
      rssProcesses: () => processes,
      version: { postgresql: pgVersion[0]?.server_version ?? "unknown", redis: redisVersion },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** SIGTERM: Postern's graceful stop (drains, stops its embedded services), the forwarder's end; SIGKILL after 60 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  await exited;
  clearTimeout(timer);
}

/** The sink itself as the "relay": plain SMTP, no TLS, no AUTH, nothing stored. */
export function ceiling(sinkPort: number): Peer {
  return {
    name: "ceiling",
    smtpPorts: [sinkPort],
    login: undefined,
    freshLogins: [],
    groups: [],
    rssProcesses: () => [],
    version: {},
    stop: async () => {},
  };
}

/** The forwarder (bench/forwarder.ts): logins as Postfix's, one password shared by all. */
export async function startForwarder(options: { sinkPort: number; freshLogins: number }): Promise<Peer> {
  const smtpPort = await freePort();
  const password = randomBytes(18).toString("base64url");
  const child = await startForwarderProcess({ port: smtpPort, sinkPort: options.sinkPort, password });
  const pid = child.pid as number;
  return {
    name: "forwarder",
    smtpPorts: [smtpPort],
    login: { username: "bench", password },
    freshLogins: Array.from({ length: options.freshLogins }, (_, i) => ({ username: `fresh${i}`, password })),
    groups: [{ name: "forwarder", roots: () => [pid] }],
    rssProcesses: () => [{ name: "forwarder", pid }],
    version: {},
    stop: () => stopChild(child),
  };
}

export function postfixInstalled(): boolean {
  return ["/usr/sbin/postfix", "/usr/sbin/saslpasswd2"].every((file) => existsSync(file));
}

/**
 * A private Postfix (bench/postfix/postfix.sh): `stock`, Postfix's own concurrency (`postfix`);
 * `tuned`, raised as an operator relaying to one smarthost would (`postfix-tuned`).
 */
export async function startPostfix(options: {
  sinkPort: number;
  freshLogins: number;
  repositoryRoot: string;
  concurrency: "stock" | "tuned";
}): Promise<Peer> {
  if (!postfixInstalled())
    throw new Error(
      "--peer postfix needs Postfix and Cyrus SASL: apt-get install -y postfix sasl2-bin libsasl2-modules",
    );
  if (process.getuid?.() !== 0) throw new Error("--peer postfix needs root (Postfix's master runs as root)");
  const dir = await mkdtemp(join(tmpdir(), "postern-bench-postfix-"));
  await chmod(dir, 0o755); // Postfix's daemons run as the postfix user
  const smtpPort = await freePort();
  const password = randomBytes(18).toString("base64url");
  const login = { username: "bench", password };
  const freshLogins = Array.from({ length: options.freshLogins }, (_, i) => ({
    username: `fresh${i}`,
    password,
  }));
  const usersFile = join(dir, "users");
  await writeFile(usersFile, [login, ...freshLogins].map((l) => `${l.username} ${l.password}\n`).join(""), {
    mode: 0o600,
  });
  const script = join(options.repositoryRoot, "bench/postfix/postfix.sh");
  try {
    await run(script, [
      "start",
      dir,
      String(smtpPort),
      String(options.sinkPort),
      usersFile,
      options.concurrency,
    ]);
    await waitForPort(smtpPort, 10_000);
  } catch (error) {
    const log = await readFile(join(dir, "log/postfix.log"), "utf8").catch(() => "");
    await run(script, ["stop", dir]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw new Error(`private Postfix did not start: ${(error as Error).message}\n${log.slice(-2000)}`);
  }
  const master = () => pidFromFile(join(dir, "queue/pid/master.pid"));
  const version = (await run("postconf", ["-c", join(dir, "etc"), "-h", "mail_version"])).stdout.trim();
  return {
    name: options.concurrency === "tuned" ? "postfix-tuned" : "postfix",
    smtpPorts: [smtpPort],
    login,
    freshLogins,
    groups: [{ name: "postfix", roots: () => [master()].filter((p): p is number => p !== undefined) }],
    // Postfix is many short-lived processes; a per-process peak says nothing about it.
    rssProcesses: () => [],
    version: { postfix: version },
    async stop() {
      await run(script, ["stop", dir]).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
