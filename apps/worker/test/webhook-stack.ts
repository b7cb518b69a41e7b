import { buildApi } from "@postern/api";
import type { EnvSource } from "@postern/config";
import { type RunningSmtp, startSmtp } from "@postern/smtp";
import { createLogger, createMetricsRegistry, type Registry } from "@postern/telemetry";
import {
  createProjectFixture,
  createTestContext,
  type ProjectFixture,
  SmtpSink,
  type TestContext,
} from "@postern/testkit";
import { type RunningWorker, startWorker } from "@postern/worker";
import type { FastifyInstance } from "fastify";
import nodemailer from "nodemailer";

/**
 * Postern as the webhook tests need it: the SMTP role, the worker role (its dispatcher and webhook
 * worker) and the API, on a test context configured by `env`, with an SMTP sink as every project's
 * upstream.
 */
export interface WebhookStack {
  ctx: TestContext;
  smtp: RunningSmtp;
  worker: RunningWorker;
  /** The worker's registry. */
  metrics: Registry;
  api: FastifyInstance;
  upstream: SmtpSink;
  project(): Promise<ProjectFixture>;
  /** POST /v1/webhooks as the project; the created endpoint with its secret. */
  addWebhook(fixture: ProjectFixture, url: string, events: string[]): Promise<{ id: string; secret: string }>;
  /** Messages sent over one SMTP connection with AUTH; their ids, in order. */
  send(fixture: ProjectFixture, count?: number, to?: string): Promise<string[]>;
  /** GET /v1/webhooks/:id/deliveries as the project (one page of 200). */
  deliveries(fixture: ProjectFixture, webhookId: string): Promise<DeliveryJson[]>;
  close(): Promise<void>;
}

export interface DeliveryJson {
  id: string;
  eventId: string | null;
  eventType: string;
  status: "pending" | "succeeded" | "failed";
  payload: {
    id: string;
    type: string;
    messageId: string | null;
    createdAt: string;
    data: Record<string, unknown>;
  };
  attempts: {
    number: number;
    statusCode: number | null;
    response: string | null;
    error: string | null;
    durationMs: number;
  }[];
}

export async function startWebhookStack(env: EnvSource): Promise<WebhookStack> {
  const ctx = await createTestContext(env);
  const log = createLogger({ level: "silent" });
  const upstream = await SmtpSink.start();
  const smtp = await startSmtp(
    { ...ctx, log, metrics: createMetricsRegistry() },
    { smtpPort: 0, smtpsPort: 0 },
  );
  const metrics = createMetricsRegistry();
  const worker = await startWorker({ ...ctx, log, metrics });
  const api = await buildApi({ ...ctx, log, metrics: createMetricsRegistry() });
  const auth = (fixture: ProjectFixture) => ({ authorization: `Bearer ${fixture.apiToken.token}` });
  return {
    ctx,
    smtp,
    worker,
    metrics,
    api,
    upstream,
    project: () => createProjectFixture(ctx.db, ctx.config, { upstream: upstream.url }),
    async addWebhook(fixture, url, events) {
      const response = await api.inject({
        method: "POST",
        url: "/v1/webhooks",
        headers: auth(fixture),
        payload: { url, events },
      });
      if (response.statusCode !== 201)
        throw new Error(`POST /v1/webhooks: ${response.statusCode} ${response.body}`);
      return response.json();
    },
    async send(fixture, count = 1, to = "user@example.net") {
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port: smtp.ports.smtp,
        name: "client.test",
        requireTLS: true,
        pool: true,
        maxConnections: 1,
        auth: { user: fixture.smtp.username, pass: fixture.smtp.password },
        tls: { rejectUnauthorized: false },
      });
      try {
        const ids: string[] = [];
        for (let i = 0; i < count; i++) {
          const { response } = await transport.sendMail({
            from: "app@example.com",
            to,
            subject: `webhooks ${i}`,
            text: "hello",
          });
          const id = /queued as ([0-9a-f-]{36})/.exec(response)?.[1];
          if (!id) throw new Error(`not accepted: ${response}`);
          ids.push(id);
        }
        return ids;
      } finally {
        transport.close();
      }
    },
    async deliveries(fixture, webhookId) {
      const response = await api.inject({
        method: "GET",
        url: `/v1/webhooks/${webhookId}/deliveries?limit=200`,
        headers: auth(fixture),
      });
      if (response.statusCode !== 200) throw new Error(`deliveries: ${response.statusCode} ${response.body}`);
      return response.json().items;
    },
    async close() {
      await api.close();
      await smtp.stop();
      await worker.stop();
      await upstream.stop();
      await ctx.close();
    },
  };
}

/** The p-th percentile (0..100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return (
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN
  );
}
