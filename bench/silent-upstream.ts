/**
 * A stuck upstream for the `stuck-neighbour` scenario: it accepts TCP connections and never says a
 * word (no greeting, no reply), like a server whose process hangs behind a listening socket or a
 * middlebox that swallows the session. A client sees only its own timeouts. It runs in the
 * runner's process: it reads nothing and writes nothing, so it costs no CPU worth measuring.
 */
import type { AddressInfo } from "node:net";
import { createServer, type Socket } from "node:net";

export interface SilentUpstream {
  port: number;
  /** Connections accepted since the start. */
  connections(): number;
  /** Closes the listener and every connection it holds. */
  stop(): Promise<void>;
}

export async function startSilentUpstream(): Promise<SilentUpstream> {
  const open = new Set<Socket>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    open.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => open.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => accepted,
    async stop() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}
