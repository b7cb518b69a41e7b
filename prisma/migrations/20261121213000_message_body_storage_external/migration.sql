-- Message bodies are written once, read once by the delivery worker and pruned after retention.
-- PostgreSQL's default TOAST storage (EXTENDED) pglz-compresses every large body on the accept
-- path, costing CPU for little gain on mail (attachments are already compressed, base64 barely
-- compresses): store bodies out of line without compression.
ALTER TABLE "MessageBody" ALTER COLUMN "data" SET STORAGE EXTERNAL;
