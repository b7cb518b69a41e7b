export { pruneWebhookDeliveries } from "./delivery-store";
export {
  createWebhookService,
  subscribableEventTypes,
  type WebhookAttemptView,
  type WebhookDeliveryView,
  type WebhookRefusal,
  type WebhookService,
  type WebhookView,
  webhookInputSchema,
  webhookPatchSchema,
} from "./endpoints";
export type { WebhookEvent, WebhookRecipient } from "./events";
export { createWebhookWaker, type WebhookWaker } from "./queue";
export { type RunningWebhookWorker, startWebhookWorker, type WebhookWorkerDeps } from "./worker";
