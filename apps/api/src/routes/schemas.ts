import { z } from "zod";

/** Shapes shared by several route groups. */

export const uuidParam = z.uuid({ error: "must be a UUID" });

export const isoDate = z.string().describe("ISO 8601 date-time");

export const auditEvent = z.object({
  id: z.string().describe("increasing, but not commit-ordered; use as cursor or Last-Event-ID"),
  createdAt: isoDate,
  projectId: z.string().nullable(),
  actor: z.string(),
  action: z.string(),
  ip: z.string().nullable(),
  details: z.record(z.string(), z.unknown()),
});

export const auditPage = z.object({
  items: z.array(auditEvent),
  nextCursor: z.string().nullable(),
});

export const auditCursor = z
  .string()
  .regex(/^[0-9]{1,19}$/, "must be the nextCursor of a previous page")
  .transform((value) => BigInt(value));

export const pageLimit = z.coerce.number().int().min(1).max(200).default(50);

/** A project's settings of what it does with what it accepts (docs/rules.md). */
export const projectSettingsJson = z.object({
  mode: z.enum(["live", "sandbox"]).describe("sandbox: messages are stored as sandboxed and never delivered"),
  holdTtlMinutes: z.number().describe("minutes a held message waits for approve or deny"),
  holdExpiry: z.enum(["approve", "deny"]).describe("what becomes of a held message after holdTtlMinutes"),
  dedupWindowSeconds: z.number().describe("resubmissions within this window answer the first id; 0: off"),
  autoSuppress: z
    .boolean()
    .describe("a recipient the upstream answers does not exist (5.1.x) is added to the suppressions"),
  returnPath: z
    .enum(["sender", "verp"])
    .describe(
      "the envelope sender towards the upstream: the sender's, or a VERP return path (with BOUNCE_DOMAIN)",
    ),
});
