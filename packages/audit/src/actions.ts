/** Every audit action Postern writes. One union, so a typo is a type error. */
export const auditActions = [
  "auth.success",
  "auth.failure",
  "auth.blocked",
  "message.accepted",
  "message.rejected",
  /** A resubmission within the project's dedupWindowSeconds: not stored; `details.messageId` is the first message. */
  "message.duplicate",
  "message.delivered",
  "message.failed",
  "message.retried",
  "message.cancelled",
  "message.approved",
  "message.denied",
  "message.bulk_action",
  /** A delivered recipient reported failed by a delivery status notification (the inbound role). */
  "message.bounced",
  /** A delivered recipient's complaint, from a feedback report (the inbound role). */
  "message.complained",
  /** Mail the inbound role accepted but could not match to a message and recipient: kept here, never dropped silently. */
  "inbound.unmatched",
  "quota.exceeded",
  "project.created",
  "project.updated",
  "project.suspended",
  "project.resumed",
  "project.deleted",
  "credential.created",
  "credential.revoked",
  "token.created",
  "token.revoked",
  "rules.updated",
  "domain.created",
  "domain.verified",
  "domain.rotated",
  "domain.deleted",
  /** A suppression added or changed (API, CLI, or `system` for a 5.1.x failure's); an import is one event. */
  "suppression.added",
  "suppression.removed",
  /** Webhook endpoints (docs/webhooks.md); `webhook.disabled` by its project, or by `system` after failing for WEBHOOK_DISABLE_AFTER. */
  "webhook.created",
  "webhook.updated",
  "webhook.deleted",
  "webhook.disabled",
  "webhook.enabled",
  /** A delivery sent again, or every failed one since a time (`details.count`). */
  "webhook.replayed",
] as const;

export type AuditAction = (typeof auditActions)[number];
