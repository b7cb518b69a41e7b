import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * The webhook endpoint of `pooled-10k-webhooks`: an HTTP server on a loopback port, in the harness's
 * process, that answers every POST `204` at once and remembers, for each event id the first time it
 * came, when its event was created and when it arrived. Signatures are not checked here (the tests
 * do that): the scenario measures what sending costs the relay.
 */
export interface BenchReceiver {
  url: string;
  /** Distinct events acknowledged so far. */
  count(): number;
  /** Each distinct event's creation and arrival times (ms). */
  receipts(): { createdAt: number; receivedAt: number }[];
  stop(): Promise<void>;
}

export async function startBenchReceiver(): Promise<BenchReceiver> {
  const seen = new Map<string, { createdAt: number; receivedAt: number }>();
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const id = request.headers["webhook-id"];
      if (typeof id === "string" && !seen.has(id)) {
        const createdAt = Date.parse(
          (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { createdAt: string }).createdAt,
        );
        seen.set(id, { createdAt, receivedAt: Date.now() });
      }
      response.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/postern`,
    count: () => seen.size,
    receipts: () => [...seen.values()],
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
