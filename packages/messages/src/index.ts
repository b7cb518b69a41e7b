export {
  type AcceptedMessage,
  type AcceptedStatus,
  acceptStatement,
  type StoreResult,
  type SuppressedRecipient,
  storeAcceptedMessages,
  storeLargeMessage,
} from "./accept";
export {
  classifyDatabaseError,
  type DatabaseErrorClass,
  refusedARow,
  refusedContent,
} from "./database-errors";
export {
  type AttemptRecord,
  bodySliceBytes,
  createDeliveryStore,
  type DeliveryStore,
  type DeliveryStoreOptions,
  loadSql,
  recordSql,
  type StoredMessage,
  type StoredRecipient,
} from "./delivery-store";
export {
  type FingerprintedContent,
  pruneFingerprints,
  startFingerprint,
} from "./duplicates";
export {
  decodeEventCursor,
  type EventCursor,
  encodeEventCursor,
  listEvents,
  listEventsAfterCursors,
  listMessageEvents,
  type MessageEventRow,
  type MessageEventType,
  messageEventJson,
  messageEventTypes,
  type OutboxEvent,
  type ProjectEventCursor,
  pruneMessageEvents,
} from "./events";
export {
  createGroupCommit,
  type ExpectedItem,
  type GroupCommit,
  type GroupCommitOptions,
} from "./group-commit";
export {
  applyBulkAction,
  type BulkAction,
  type BulkActionRequest,
  type BulkActionResult,
  bulkActionLimit,
  changeMessageStatus,
  type StatusAction,
} from "./lifecycle";
export { type MessageFilter, messageFilterSql } from "./message-filter";
export {
  countPendingMessages,
  deliveryLatency,
  findMessage,
  type ListedMessage,
  listMessages,
  listMessagesSql,
  type MessageActionResult,
  type MessageListQuery,
  type MessageReader,
  retryMessage,
} from "./project-messages";
export {
  findReportedMessage,
  type RecipientReport,
  type ReportedMessage,
  type ReportedRecipient,
  recordRecipientReport,
} from "./reports";
export { messageStored, type StoredBody, streamMessageBody } from "./stored-body";
export {
  type DueMessage,
  dueMessages,
  type ExpiredHold,
  expireHolds,
  oldestPendingAcceptedAt,
  pruneBodies,
  queuedBacklog,
  sweepPageSize,
} from "./sweep";
export {
  allowedRecipientTransitions,
  allowedTransitions,
  checkAction,
  checkTransition,
  deliverableStatuses,
  type LifecycleAction,
  lifecycleActions,
  recipientStatusesBefore,
  statusesBefore,
  type TransitionResult,
} from "./transitions";
