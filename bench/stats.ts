/**
 * `--seed-messages`: how fast `GET /v1/stats` and the dashboard's messages page answer with many
 * messages stored.
 */
import type { Database } from "@postern/db";
import { summarizeLatencies } from "./latency";
import type { StatsEndpointReport } from "./report";

/**
 * Stores `count` messages of one project in one INSERT … SELECT generate_series (a million rows in
 * seconds, no per-row round trip): spread over the last 7 days, the four statuses in turn, with the
 * completion times a delivered or failed message has. No bodies: the stats never read them.
 */
export async function seedMessages(db: Database, projectId: string, count: number): Promise<void> {
  await db.$executeRawUnsafe(
    `INSERT INTO "Message" ("id", "projectId", "mailFrom", "subject", "size", "sha256", "status",
                            "attempts", "createdAt", "updatedAt", "deliveredAt", "completedAt")
     SELECT gen_random_uuid(), $1::uuid, 'seed@bench.example', 'seeded ' || i, 10240, md5(i::text),
            s.status::"MessageStatus", CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END,
            c.at, c.at,
            CASE WHEN s.status = 'delivered' THEN c.at + interval '1 second' END,
            CASE WHEN s.status IN ('delivered', 'failed') THEN c.at + interval '1 second' END
     FROM generate_series(1, $2::int) AS i,
          LATERAL (SELECT (ARRAY['queued','deferred','delivered','failed'])[1 + i % 4] AS status) AS s,
          LATERAL (SELECT now() - (i % 604800) * interval '1 second' AS at) AS c`,
    projectId,
    count,
  );
  await db.$executeRawUnsafe(`ANALYZE "Message"`);
}

/** Seeds, then times GET /v1/stats one request at a time; skipped with a note when the route is missing. */
export async function measureStatsEndpoint(
  target: { httpPort: number; apiToken: string; db: Database; projectId: string },
  count: number,
  rounds: number,
): Promise<StatsEndpointReport> {
  const url = `http://127.0.0.1:${target.httpPort}/v1/stats`;
  const headers = { authorization: `Bearer ${target.apiToken}` };
  const probe = await fetch(url, { headers });
  await probe.arrayBuffer();
  if (probe.status === 404)
    return {
      seededMessages: 0,
      seedSeconds: 0,
      skipped: "GET /v1/stats answers 404 (the /v1 routes are not on this branch)",
    };
  const seedStarted = performance.now();
  await seedMessages(target.db, target.projectId, count);
  const seedSeconds = (performance.now() - seedStarted) / 1000;
  // What the endpoint counted, to show it answered over the seeded rows rather than an empty window.
  const first = await fetch(url, { headers });
  const acceptedInWindow = ((await first.json()) as { counts?: { accepted?: number } }).counts?.accepted;
  const samples: number[] = [];
  const warmup = 5; // the first requests warm PostgreSQL's caches and plans
  for (let i = 0; i < rounds + warmup; i++) {
    const started = performance.now();
    const response = await fetch(url, { headers });
    await response.arrayBuffer();
    if (!response.ok)
      return { seededMessages: count, seedSeconds, skipped: `GET /v1/stats answered ${response.status}` };
    if (i >= warmup) samples.push(performance.now() - started);
  }
  return {
    seededMessages: count,
    seedSeconds,
    acceptedInWindow,
    latencyMs: summarizeLatencies(samples),
    messagesPage: await measureMessagesPage(target, rounds),
  };
}

/**
 * The dashboard's messages page over the seeded rows: the request that brings its first data
 * (`GET /v1/messages?limit=50`, newest first), made as the page makes it, with a dashboard session
 * cookie opened by `POST /session`.
 */
async function measureMessagesPage(
  target: { httpPort: number; apiToken: string },
  rounds: number,
): Promise<StatsEndpointReport["messagesPage"]> {
  const origin = `http://127.0.0.1:${target.httpPort}`;
  const signIn = await fetch(`${origin}/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: target.apiToken }),
  });
  await signIn.arrayBuffer();
  const session = /postern_session=[^;]+/.exec(signIn.headers.get("set-cookie") ?? "")?.[0];
  if (signIn.status !== 201 || !session) return { skipped: `POST /session answered ${signIn.status}` };
  const url = `${origin}/v1/messages?limit=50`;
  const samples: number[] = [];
  const warmup = 5;
  for (let i = 0; i < rounds + warmup; i++) {
    const started = performance.now();
    const response = await fetch(url, { headers: { cookie: session } });
    const page = (await response.json()) as { items?: unknown[] };
    if (!response.ok) return { skipped: `GET /v1/messages answered ${response.status}` };
    if (i >= warmup) samples.push(performance.now() - started);
    if (i === 0 && !page.items?.length) return { skipped: "GET /v1/messages answered no messages" };
  }
  return { latencyMs: summarizeLatencies(samples) };
}
