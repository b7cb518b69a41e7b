import {
  createBacklogLedger,
  createDeliveryProducer,
  createDeliveryWorker,
  type DeliveryJobResult,
  type SingleDeliveryJob,
} from "@postern/queue";
import { createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx?.close());

const stalledTimeoutMs = 3_000;

function worker(process: (job: SingleDeliveryJob) => Promise<DeliveryJobResult>) {
  return createDeliveryWorker(ctx.redis, ctx.redisKeyPrefix, process, {
    concurrency: 1,
    stalledTimeoutMs,
    retries: createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix),
    backlog: createBacklogLedger(ctx.redis, ctx.redisKeyPrefix),
    onBatchMessageError: () => {},
  });
}

it("takes a dead worker's job up again within DELIVERY_STALLED_TIMEOUT, not twice it", async () => {
  // BullMQ moves a job back at the first stalled check after its lock expired: the lock's life
  // and the check's interval together are the longest delay.
  const dying = worker(() => new Promise<DeliveryJobResult>(() => {}));
  expect((dying.opts.lockDuration ?? 0) + (dying.opts.stalledInterval ?? 0)).toBeLessThanOrEqual(
    stalledTimeoutMs,
  );

  let started!: () => void;
  const taken = new Promise<void>((resolve) => (started = resolve));
  const first = worker(async () => {
    started();
    return new Promise<DeliveryJobResult>(() => {});
  });
  void first.run();
  const producer = createDeliveryProducer(ctx.redis, ctx.redisKeyPrefix);
  await producer.enqueue({ id: "00000000-0000-7000-8000-0000000000aa", projectId: "p" });
  await taken;
  // The worker dies: no more lock renewals, the job stays active until the lock expires.
  const diedAt = Date.now();
  await first.close(true);

  let takenUpAt = 0;
  const second = worker(async () => {
    takenUpAt = Date.now();
    return { kind: "done" };
  });
  void second.run();
  const deadline = Date.now() + 4 * stalledTimeoutMs;
  while (takenUpAt === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  await second.close();
  await producer.close();
  await dying.close();
  expect(takenUpAt).toBeGreaterThan(0);
  // Within the timeout (the lock's life and the check's interval, asserted above), not twice it:
  // a loaded machine's timers and round trips took 1.5 s beyond the timeout in a CI run.
  expect(takenUpAt - diedAt).toBeLessThan(2 * stalledTimeoutMs);
}, 30_000);
