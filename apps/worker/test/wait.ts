import type { Database, MessageStatus } from "@postern/db";

/** Polls PostgreSQL until the message has `status` (deliveries run in another task or process). */
export async function waitForStatus(
  db: Database,
  messageId: string,
  status: MessageStatus,
  timeoutMs = 15_000,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const message = await db.message.findUniqueOrThrow({ where: { id: messageId } });
    if (message.status === status) return message;
    if (Date.now() > deadline) {
      throw new Error(
        `message ${messageId} is ${message.status} (attempts ${message.attempts}), expected ${status}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Polls `condition` until it holds; fails naming `what` after `timeoutMs`. */
export async function until(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
