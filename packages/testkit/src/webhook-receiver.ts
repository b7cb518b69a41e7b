import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A POST the receiver got, as it got it. */
export interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  /** The raw body: what a signature covers. */
  body: string;
  receivedAt: number;
  /** The status answered; null: left unanswered (`hang`). */
  status: number | null;
}

/** What the receiver answers a POST: a status, or `hang` (never answers, keeps the connection). */
export type ReceiverAnswer = number | "hang";

/**
 * A webhook endpoint on a loopback port: records every POST and answers what `answer` says
 * (200 by default). It can be stopped and started again on the same port, to stand for an endpoint
 * that is down for a while.
 */
export class WebhookReceiver {
  readonly received: ReceivedWebhook[] = [];
  answer: (request: { headers: IncomingHttpHeaders; body: string; index: number }) => ReceiverAnswer = () =>
    200;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly hanging = new Set<ServerResponse>();
  private listeners: (() => void)[] = [];

  private constructor(public port: number) {}

  static async start(port = 0): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver(port);
    await receiver.listen();
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks`;
  }

  /** The bodies answered 2xx, parsed. */
  acknowledged<T = { id: string; type: string }>(): T[] {
    return this.received
      .filter((r) => r.status !== null && r.status < 300)
      .map((r) => JSON.parse(r.body) as T);
  }

  /** Resolves once `condition` holds (checked at each POST), or fails naming `what`. */
  async until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (condition()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners = this.listeners.filter((l) => l !== check);
        reject(
          new Error(`webhook receiver: timed out waiting for ${what} (${this.received.length} received)`),
        );
      }, timeoutMs);
      const check = () => {
        if (!condition()) return;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== check);
        resolve();
      };
      this.listeners.push(check);
    });
  }

  async listen(): Promise<void> {
    const server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const answer = this.answer({ headers: request.headers, body, index: this.received.length });
        this.received.push({
          headers: request.headers,
          body,
          receivedAt: Date.now(),
          status: answer === "hang" ? null : answer,
        });
        if (answer === "hang") this.hanging.add(response);
        else response.writeHead(answer, { "content-type": "text/plain" }).end(`answered ${answer}`);
        for (const listener of [...this.listeners]) listener();
      });
    });
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Closes the port and every connection (the endpoint is down until `listen`). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.hanging.clear();
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
