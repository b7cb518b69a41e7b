export {
  allowedAddresses,
  checkedLookup,
  RefusedAddressError,
  type Resolve,
  refusedRange,
} from "./address-policy";
export {
  type AttemptRecord,
  dispatchRound,
  dueDeliveries,
  pruneWebhookDeliveries,
  recordAttempts,
} from "./delivery-store";
export {
  type Actor,
  createWebhookService,
  subscribableEventTypes,
  type WebhookAttemptView,
  type WebhookDeliveryView,
  type WebhookInput,
  type WebhookPatch,
  type WebhookRefusal,
  type WebhookService,
  type WebhookView,
  webhookInputSchema,
  webhookPatchSchema,
  webhookUrl,
} from "./endpoints";
export {
  testEventType,
  type WebhookEvent,
  type WebhookRecipient,
  webhookBody,
  webhookEventOf,
} from "./events";
export { createWebhookWaker, type WebhookJob, type WebhookWaker, webhookQueueName } from "./queue";
export { createWebhookSender, type SendOutcome, type WebhookSender } from "./sender";
export { type RunningWebhookWorker, startWebhookWorker, type WebhookWorkerDeps } from "./worker";
