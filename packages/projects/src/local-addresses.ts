import { createServer } from "node:net";

/**
 * A project's `localAddresses` (docs/routing.md, Source addresses) must be addresses of this host:
 * one that is not would fail every direct connection made from it (EADDRNOTAVAIL). The test is
 * the one that matters, binding a socket to it, which also admits the addresses of a local range
 * (127.0.0.2 on Linux's loopback) that no interface lists. Answers the first address that cannot be
 * bound, with the reason, or undefined.
 */
export async function unusableLocalAddress(
  addresses: string[],
): Promise<{ address: string; reason: string } | undefined> {
  for (const address of addresses) {
    const reason = await bindProblem(address);
    if (reason) return { address, reason };
  }
  return undefined;
}

function bindProblem(address: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    server.listen({ host: address, port: 0, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}
