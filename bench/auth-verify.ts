// SMTP AUTH verification throughput: the bcrypt path (cache miss) against the cached path.
// Run: npx tsx bench/auth-verify.ts   (starts its own ephemeral PostgreSQL and Redis)
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCredentialVerifier, issueSmtpCredential } from "@postern/auth";
import { createDatabase, migrate } from "@postern/db";
import { startEmbeddedPostgres, startEmbeddedRedis } from "@postern/embedded";
import { createRedis } from "@postern/queue";

const root = await mkdtemp(join(tmpdir(), "postern-bench-"));
await chmod(root, 0o755);
const [postgres, redisServer] = await Promise.all([
  startEmbeddedPostgres({ dir: join(root, "pg"), ephemeral: true }),
  startEmbeddedRedis({ dir: join(root, "redis"), ephemeral: true }),
]);
try {
  await migrate(postgres.url);
  const db = createDatabase(postgres.url, { max: 10 });
  const redis = createRedis(redisServer.url);
  const project = await db.project.create({
    data: {
      name: "bench",
      quotaPerMinute: 1,
      quotaDaily: 1,
      maxRecipients: 1,
      upstreamUrl: "smtp://127.0.0.1:1",
    },
  });
  const credentials = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const issued = await issueSmtpCredential();
      await db.smtpCredential.create({
        data: { projectId: project.id, key: issued.key, secretHash: issued.secretHash },
      });
      return issued;
    }),
  );
  const options = { db, redis, keyPrefix: "bench", failuresPerIp: 1e9, failuresPerKey: 1e9 };

  // Cache miss every time: TTL 0. Eight clients at once, as many connections of different apps.
  const uncached = createCredentialVerifier({ ...options, cacheTtlMs: 0 });
  const perClient = 15;
  let started = performance.now();
  await Promise.all(
    credentials.map(async (c) => {
      for (let i = 0; i < perClient; i++) {
        const outcome = await uncached.verify(c.key, c.secret, "192.0.2.1");
        if (!outcome.ok) throw new Error(outcome.reason);
      }
    }),
  );
  const bcryptRate = (credentials.length * perClient) / ((performance.now() - started) / 1000);

  const cached = createCredentialVerifier({ ...options, cacheTtlMs: 60_000 });
  const c0 = credentials[0] as (typeof credentials)[number];
  await cached.verify(c0.key, c0.secret, "192.0.2.1");
  const rounds = 200_000;
  started = performance.now();
  for (let i = 0; i < rounds; i++) await cached.verify(c0.key, c0.secret, "192.0.2.1");
  const cachedRate = rounds / ((performance.now() - started) / 1000);

  console.log(`bcrypt path (cost 10, 8 concurrent clients): ${bcryptRate.toFixed(0)} verifications/s`);
  console.log(`cached path (HMAC lookup):                   ${cachedRate.toFixed(0)} verifications/s`);
  await db.$disconnect();
  redis.disconnect();
} finally {
  await Promise.all([postgres.stop(), redisServer.stop()]);
  await rm(root, { recursive: true, force: true });
}
