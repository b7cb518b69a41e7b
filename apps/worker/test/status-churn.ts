/**
 * A process that changes message statuses as fast as it can, until it is killed: accepts messages
 * (the accept statement), retries and cancels them one at a time and in bulk (the lifecycle
 * statements), beside a `postern start worker` that records their deliveries. Spawned by
 * status-kill.test.ts, which kills it with SIGKILL mid-statement. Its one argument is JSON:
 * { databaseUrl, redisUrl, redisKeyPrefix, projectId }.
 */
import { randomUUID } from "node:crypto";
import { createDatabase, sqlPoolOf, uuidv7 } from "@postern/db";
import {
  type AcceptedMessage,
  applyBulkAction,
  changeMessageStatus,
  listMessages,
  retryMessage,
  storeAcceptedMessages,
} from "@postern/messages";
import { createDeliveryProducer, createRedis } from "@postern/queue";

const { databaseUrl, redisUrl, redisKeyPrefix, projectId } = JSON.parse(process.argv[2] ?? "{}");
const db = createDatabase(databaseUrl, { max: 6 });
const sql = sqlPoolOf(db);
const redis = createRedis(redisUrl);
const producer = createDeliveryProducer(redis, redisKeyPrefix);
const actor = "test:churn";

/** Recipients the test's sink accepts (ok), defers (soft) or refuses (hard); a message has 1–2. */
function recipients(): string[] {
  const kinds = ["ok", "ok", "soft", "hard"];
  const pick = () =>
    `${kinds[Math.floor(Math.random() * kinds.length)]}-${randomUUID().slice(0, 8)}@example.net`;
  return Math.random() < 0.5 ? [pick()] : [pick(), pick()];
}

function accepted(): AcceptedMessage {
  const id = uuidv7();
  return {
    id,
    projectId,
    credentialId: null,
    actor,
    ip: "127.0.0.1",
    mailFrom: "churn@example.com",
    recipients: recipients(),
    bytes: Buffer.from(`Subject: churn\r\nMessage-ID: <${id}@example.com>\r\n\r\nHello.\r\n`),
    headerMessageId: `<${id}@example.com>`,
    subject: "churn",
    status: "queued",
    deliveryJobId: id,
  };
}

async function acceptLoop(): Promise<never> {
  for (;;) {
    const batch = Array.from({ length: 5 }, accepted);
    await storeAcceptedMessages(sql, batch);
    await producer.enqueueMany(batch.map((m) => ({ id: m.id, projectId })));
  }
}

const pickOne = <T>(items: T[]): T | undefined => items[Math.floor(Math.random() * items.length)];

/** Single retries and cancels of messages in every status, each racing the worker's records. */
async function lifecycleLoop(): Promise<never> {
  for (;;) {
    const status = pickOne(["queued", "deferred", "failed", "delivered", "cancelled"] as const);
    const page = await listMessages(db, { projectId, status, limit: 20 });
    const message = pickOne(page);
    if (!message) continue;
    const request = { projectId, id: message.id, actor, ip: null };
    if (Math.random() < 0.5) {
      await changeMessageStatus(db, { ...request, action: "cancel" });
    } else if ((await retryMessage(db, request)).ok) {
      await producer.deliverNow({ id: message.id, projectId });
    }
  }
}

/** Bulk retries of failed messages and bulk cancels of the deferred ones of the last seconds. */
async function bulkLoop(): Promise<never> {
  for (;;) {
    const retry = Math.random() < 0.5;
    const result = await applyBulkAction(db, {
      projectId,
      action: retry ? "retry" : "cancel",
      filter: retry
        ? { status: "failed" }
        : { status: "deferred", createdAfter: new Date(Date.now() - 3_000 * Math.random()) },
      dryRun: false,
      actor,
      ip: null,
    });
    if (retry) await producer.deliverManyNow(result.changedIds.map((id) => ({ id, projectId })));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

process.stdout.write("churning\n");
await Promise.all([acceptLoop(), lifecycleLoop(), lifecycleLoop(), bulkLoop()]);
