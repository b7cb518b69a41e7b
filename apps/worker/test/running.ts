import { createDeliveryProducer } from "@postern/queue";
import { createLogger, createMetricsRegistry } from "@postern/telemetry";
import type { TestContext } from "@postern/testkit";
import { startWorker, type WorkerDeps } from "@postern/worker";

/** An in-process worker and a producer on the test context's database and Redis prefix. */
export async function runWorker(ctx: TestContext, overrides: Partial<WorkerDeps> = {}) {
  const worker = await startWorker({
    config: ctx.config,
    db: ctx.db,
    redis: ctx.redis,
    log: createLogger({ level: "silent" }),
    metrics: createMetricsRegistry(),
    ...overrides,
  });
  return worker;
}

export function producerFor(ctx: TestContext) {
  return createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
}
