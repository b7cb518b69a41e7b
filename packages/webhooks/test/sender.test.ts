import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createWebhookSender } from "../src/sender";

/** One POST against a real HTTP server on a loopback port. */
let server: Server;
let port: number;
const secret = `whsec_${Buffer.alloc(32, 3).toString("base64")}`;

beforeAll(async () => {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      if (request.url === "/silent") return; // never answers
      if (request.url === "/binary") {
        response.writeHead(200).end(Buffer.concat([Buffer.from("a\u0000b"), Buffer.alloc(4000, 0x78)]));
        return;
      }
      // Answers 200 only to a body it can verify.
      try {
        new Webhook(secret).verify(body, request.headers as Record<string, string>);
        response.writeHead(200).end("ok");
      } catch {
        response.writeHead(401).end("bad signature");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe("createWebhookSender", () => {
  const body = JSON.stringify({ id: "7", type: "message.delivered" });

  it("signs what it sends; another secret's signature is refused by the receiver", async () => {
    const sender = createWebhookSender({ allowPrivate: true, timeoutMs: 5000 });
    try {
      const url = `http://127.0.0.1:${port}/hook`;
      const sent = await sender.send({ url, secret, webhookId: "7", body });
      expect(sent).toMatchObject({ ok: true, statusCode: 200, response: "ok", error: null });
      const other = `whsec_${Buffer.alloc(32, 4).toString("base64")}`;
      const forged = await sender.send({ url, secret: other, webhookId: "7", body });
      expect(forged).toMatchObject({
        ok: false,
        statusCode: 401,
        response: "bad signature",
        error: "HTTP 401",
      });
    } finally {
      sender.close();
    }
  });

  it("keeps the first 1024 bytes of an answer, without NUL characters", async () => {
    const sender = createWebhookSender({ allowPrivate: true, timeoutMs: 5000 });
    try {
      const sent = await sender.send({
        url: `http://127.0.0.1:${port}/binary`,
        secret,
        webhookId: "8",
        body,
      });
      expect(sent.ok).toBe(true);
      expect(sent.response?.startsWith("abxxx")).toBe(true);
      expect(sent.response).toHaveLength(1023);
    } finally {
      sender.close();
    }
  });

  it("fails an endpoint that does not answer within the timeout, and refuses loopback without the flag", async () => {
    const sender = createWebhookSender({ allowPrivate: true, timeoutMs: 300 });
    const strict = createWebhookSender({ allowPrivate: false, timeoutMs: 5000 });
    try {
      const silent = await sender.send({
        url: `http://127.0.0.1:${port}/silent`,
        secret,
        webhookId: "9",
        body,
      });
      expect(silent).toMatchObject({ ok: false, statusCode: null, error: "no answer within 0.3 s" });
      expect(silent.durationMs).toBeGreaterThanOrEqual(250);
      const refused = await strict.send({
        url: `http://127.0.0.1:${port}/hook`,
        secret,
        webhookId: "9",
        body,
      });
      expect(refused).toMatchObject({ ok: false, statusCode: null });
      expect(refused.error).toContain("127.0.0.1, a loopback address: refused");
    } finally {
      sender.close();
      strict.close();
    }
  });
});
