import { Prisma, type RecipientStatus } from "@postern/db";
import { utc } from "./message-filter";
import type { MessageReader } from "./project-messages";
import { recipientStatusesBefore, sqlList } from "./transitions";

/**
 * What the inbound role (apps/inbound) records: a recipient of a delivered message reported
 * `bounced` by a delivery status notification (RFC 3464) or `complained` by a feedback report
 * (RFC 5965), found through the message its VERP return path names (docs/bounces.md).
 */

/** A message a report names, with what matching the report's recipients needs. */
export interface ReportedMessage {
  id: string;
  projectId: string;
  /** The project adds reported recipients to its suppressions. */
  autoSuppress: boolean;
  recipients: { id: string; address: string; status: RecipientStatus }[];
}

/** The message and its recipients; undefined when there is none (deleted with its project). */
export async function findReportedMessage(
  db: MessageReader,
  messageId: string,
): Promise<ReportedMessage | undefined> {
  const rows = await db.$queryRaw<ReportedMessage[]>`
SELECT m."id", m."projectId", p."autoSuppress",
       (SELECT coalesce(json_agg(json_build_object('id', r."id", 'address', r."address", 'status', r."status")
                                 ORDER BY r."id"), '[]')
        FROM "MessageRecipient" r WHERE r."messageId" = m."id") AS "recipients"
FROM "Message" m JOIN "Project" p ON p."id" = m."projectId"
WHERE m."id" = ${messageId}::uuid`;
  return rows[0];
}

/** What a report says of one recipient: its new state's SMTP result, as the upstream's would be. */
export interface ReportedRecipient {
  /** MessageRecipient id. */
  id: string;
  code: number | null;
  enhancedCode: string | null;
  response: string | null;
}

export interface RecipientReport {
  projectId: string;
  messageId: string;
  status: "bounced" | "complained";
  recipients: ReportedRecipient[];
  /** What the report says as a whole (its kind, reporting MTA, feedback type…): the event's `data.report`. */
  report: Record<string, unknown>;
  /** The reporting client's address, for the audit event. */
  ip: string | null;
  now?: Date;
}

/**
 * Marks the recipients `bounced` or `complained`, in ONE statement with the message's event
 * (`message.bounced` / `message.complained`, `data.recipients` the recipients it marked as
 * CONTRACT §9 shapes them, `data.report` what the report said) and its audit event. Only
 * recipients whose status allows it move (allowedRecipientTransitions: a delivered recipient);
 * a report read twice (a reporting MTA that retries after losing our 250) marks nothing the
 * second time and writes no event. Answers the addresses it marked.
 */
export async function recordRecipientReport(db: MessageReader, report: RecipientReport): Promise<string[]> {
  if (report.recipients.length === 0) return [];
  const at = utc(report.now ?? new Date());
  const type = `message.${report.status}`;
  const from = Prisma.raw(sqlList(recipientStatusesBefore(report.status)));
  const rows = await db.$queryRaw<{ address: string }[]>`
WITH input AS (
  SELECT * FROM jsonb_to_recordset(${JSON.stringify(report.recipients)}::jsonb)
    AS t("id" uuid, "code" int, "enhancedCode" text, "response" text)
), marked AS (
  UPDATE "MessageRecipient" AS r
  SET "status" = ${report.status}::"RecipientStatus", "code" = i."code", "enhancedCode" = i."enhancedCode",
      "response" = i."response", "updatedAt" = ${at}
  FROM input i
  WHERE r."id" = i."id" AND r."messageId" = ${report.messageId}::uuid AND r."status"::text IN (${from})
  RETURNING r."address", r."status", r."code", r."enhancedCode", r."response"
), recipients AS (
  SELECT jsonb_agg(jsonb_build_object('address', "address", 'status', "status", 'code', "code",
                   'enhancedCode', "enhancedCode", 'response', "response") ORDER BY "address") AS "list"
  FROM marked
), event AS (
  INSERT INTO "MessageEvent" ("projectId", "messageId", "type", "createdAt", "data")
  SELECT ${report.projectId}::uuid, ${report.messageId}::uuid, ${type}, ${at},
         jsonb_build_object('recipients', r."list", 'report', ${JSON.stringify(report.report)}::jsonb)
  FROM recipients r WHERE r."list" IS NOT NULL
), audit AS (
  INSERT INTO "AuditEvent" ("createdAt", "projectId", "actor", "action", "ip", "details")
  SELECT ${at}, ${report.projectId}::uuid, 'system', ${type}, ${report.ip},
         jsonb_build_object('messageId', ${report.messageId}::text, 'recipients', r."list",
                            'report', ${JSON.stringify(report.report)}::jsonb)
  FROM recipients r WHERE r."list" IS NOT NULL
)
SELECT "address" FROM marked ORDER BY "address"`;
  return rows.map((row) => row.address);
}
