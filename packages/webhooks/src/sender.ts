import http from "node:http";
import https from "node:https";
import { Webhook } from "standardwebhooks";
import { allowedAddresses, checkedLookup, hostOf } from "./address-policy";

/**
 * One POST of a webhook: the body signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature: v1,<base64 HMAC-SHA256>`) with the endpoint's `whsec_` secret by the
 * `standardwebhooks` library, sent over keep-alive connections whose addresses are checked
 * (address-policy.ts), within `timeoutMs` for the whole exchange. The outcome is a value: an
 * endpoint that refuses, fails or stays silent is what this module is for, not an exception.
 */

export interface SendOutcome {
  ok: boolean;
  startedAt: Date;
  durationMs: number;
  /** The HTTP status; null: no answer. */
  statusCode: number | null;
  /** The first `responseBytes` bytes of the answer's body, as text. */
  response: string | null;
  /** Why there was no 2xx answer in words: the connection error, the timeout, the refused address. */
  error: string | null;
}

export interface WebhookSenderOptions {
  allowPrivate: boolean;
  timeoutMs: number;
}

/** What the delivery log keeps of an answer's body. */
export const responseBytes = 1024;
/** An answer's body is read (so the connection can be reused) up to this size, then dropped. */
const maxBodyBytes = 1024 * 1024;

export interface WebhookSender {
  send(request: { url: string; secret: string; webhookId: string; body: string }): Promise<SendOutcome>;
  /** Closes the idle keep-alive connections. */
  close(): void;
}

export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  const policy = { allowPrivate: options.allowPrivate };
  // One pool of keep-alive connections per scheme; each new connection resolves and checks its host.
  const agentOptions = { keepAlive: true, lookup: checkedLookup(policy), scheduling: "lifo" as const };
  const agents = { "http:": new http.Agent(agentOptions), "https:": new https.Agent(agentOptions) };

  return {
    async send({ url, secret, webhookId, body }) {
      const startedAt = new Date();
      const started = performance.now();
      const outcome = (fields: Omit<SendOutcome, "startedAt" | "durationMs">): SendOutcome => ({
        ...fields,
        startedAt,
        durationMs: Math.round(performance.now() - started),
      });
      let target: URL;
      try {
        target = new URL(url);
        // node:net skips `lookup` for an IP literal: checked here.
        await allowedAddresses(hostOf(target), policy).then((addresses) => {
          if (addresses.length === 0) throw new Error("no address");
        });
      } catch (error) {
        return outcome({ ok: false, statusCode: null, response: null, error: describe(error) });
      }
      const signature = new Webhook(secret).sign(webhookId, startedAt, body);
      const headers = {
        "content-type": "application/json",
        "user-agent": "Postern-Webhooks/1",
        "webhook-id": webhookId,
        "webhook-timestamp": String(Math.floor(startedAt.getTime() / 1000)),
        "webhook-signature": signature,
        "content-length": String(Buffer.byteLength(body)),
      };
      const transport = target.protocol === "https:" ? https : http;
      return new Promise<SendOutcome>((resolve) => {
        let settled = false;
        const finish = (result: SendOutcome) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(result);
        };
        const request = transport.request(
          target,
          { method: "POST", headers, agent: agents[target.protocol as keyof typeof agents] },
          (response) => {
            const chunks: Buffer[] = [];
            let kept = 0;
            let read = 0;
            response.on("data", (chunk: Buffer) => {
              read += chunk.length;
              if (kept < responseBytes) {
                chunks.push(chunk.subarray(0, responseBytes - kept));
                kept += Math.min(chunk.length, responseBytes - kept);
              }
              // A receiver that streams without end does not hold the attempt: what was kept is enough.
              if (read > maxBodyBytes) response.destroy();
            });
            const done = () => {
              const statusCode = response.statusCode ?? null;
              const ok = statusCode !== null && statusCode >= 200 && statusCode < 300;
              finish(
                outcome({
                  ok,
                  statusCode,
                  // PostgreSQL's text holds no NUL: a receiver's binary answer must not make the
                  // attempt unrecordable.
                  response: Buffer.concat(chunks).toString("utf8").replaceAll("\u0000", ""),
                  error: ok ? null : `HTTP ${statusCode}`,
                }),
              );
            };
            response.on("end", done);
            response.on("close", done);
            response.on("error", done);
          },
        );
        const timer = setTimeout(
          () => request.destroy(new Error(`no answer within ${options.timeoutMs / 1000} s`)),
          options.timeoutMs,
        );
        request.on("error", (error) =>
          finish(outcome({ ok: false, statusCode: null, response: null, error: describe(error) })),
        );
        request.end(body);
      });
    },
    close() {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  };
}

function describe(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  const text = (e?.message || String(error)).replaceAll("\u0000", "");
  return e?.code && !text.includes(e.code) ? `${e.code}: ${text}` : text;
}
