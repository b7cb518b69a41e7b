import type { Redis } from "@postern/queue/redis";

/**
 * Revoking a credential or an API token, or suspending/changing/deleting a project, must take
 * effect on every node at once: the change is published on this Redis channel and every node
 * drops what it cached (the SMTP credential verifier, the API's token verifier).
 */
export type AuthInvalidation =
  | { kind: "credential"; credentialId: string }
  | { kind: "apiToken"; tokenId: string }
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

/** What a cache does with the invalidations it hears. */
export interface InvalidationListener {
  invalidate(event: AuthInvalidation): void;
  /** Invalidations may have been missed (the subscription was down, or one was unreadable). */
  forgetAll(): void;
}

/**
 * Subscribes `subscriber` (a connection of its own: a subscribed ioredis connection takes no other
 * commands) to the channel and hands each event to `listener`.
 */
export async function listenForAuthInvalidations(
  subscriber: Redis,
  keyPrefix: string,
  listener: InvalidationListener,
): Promise<void> {
  const channel = authInvalidationChannel(keyPrefix);
  subscriber.on("message", (from: string, payload: string) => {
    if (from !== channel) return;
    const event = parseInvalidation(payload);
    // Unreadable: drop everything rather than keep what might be revoked.
    if (event) listener.invalidate(event);
    else listener.forgetAll();
  });
  // While the subscription was down, invalidations may have been missed.
  let connectedOnce = subscriber.status === "ready";
  subscriber.on("ready", () => {
    if (connectedOnce) listener.forgetAll();
    connectedOnce = true;
  });
  await subscriber.subscribe(channel);
}

function parseInvalidation(payload: string): AuthInvalidation | undefined {
  try {
    const event = JSON.parse(payload) as Partial<{
      kind: string;
      credentialId: string;
      tokenId: string;
      projectId: string;
    }>;
    if (event.kind === "credential" && typeof event.credentialId === "string")
      return { kind: "credential", credentialId: event.credentialId };
    if (event.kind === "apiToken" && typeof event.tokenId === "string")
      return { kind: "apiToken", tokenId: event.tokenId };
    if (event.kind === "project" && typeof event.projectId === "string")
      return { kind: "project", projectId: event.projectId };
  } catch {}
  return undefined;
}
