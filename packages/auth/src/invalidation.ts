import type { Redis } from "ioredis";

/**
 * Revoking a credential or suspending/changing/deleting a project must take effect on every SMTP
 * node at once: the change is published on this Redis channel and every node drops what it cached.
 */
export type AuthInvalidation =
  | { kind: "credential"; credentialId: string }
  | { kind: "project"; projectId: string };

export function authInvalidationChannel(keyPrefix: string): string {
  return `${keyPrefix}:auth-invalidation`;
}

export async function publishAuthInvalidation(
  redis: Redis,
  keyPrefix: string,
  event: AuthInvalidation,
): Promise<void> {
  await redis.publish(authInvalidationChannel(keyPrefix), JSON.stringify(event));
}
