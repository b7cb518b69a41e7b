export { type AuditAction, auditActions } from "./actions";
export { type AuditEntry, type AuditWriter, recordAudit, recordAuditMany } from "./writer";
