export { type AuditAction, auditActions } from "./actions";
export {
  type AuditEventJson,
  type AuditFilter,
  type AuditPage,
  auditEventJson,
  listAuditEvents,
  matchesAuditFilter,
} from "./reader";
export { pruneAuditEvents } from "./retention";
export { type AuditTailOptions, tailAudit } from "./tail";
export { type AuditEntry, type AuditWriter, recordAudit, recordAuditMany } from "./writer";
