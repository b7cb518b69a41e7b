import { z } from "zod";

/**
 * The JSON shape of a project's rules (docs/rules.md), shared by `PUT /v1/rules`, the operator
 * routes and `postern rules set`, so all of them accept and refuse exactly the same input. Every
 * bound here is also what keeps judging a message cheap: at most `maxRules` rules, short patterns.
 */

export const maxRules = 200;

/** Printable ASCII without `"`: a name is quoted in SMTP replies and audit events. */
const ruleName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[!#-~][ !#-~]*$/, 'must be printable ASCII without `"`, not starting with a space');

/** An address pattern: `*` is any run of characters (glob.ts); no white space or control characters. */
const addressGlob = z
  .string()
  .min(1)
  .max(254)
  .regex(/^[^\s\p{Cc}]+$/u, "must be an address pattern without spaces, like *@example.com")
  .refine((pattern) => pattern.split("*").length <= 17, "at most 16 `*` in a pattern");

/** Text looked for in a header field, case-insensitive; one line. */
const contains = z
  .string()
  .min(1)
  .max(998)
  .regex(/^[^\r\n]*$/, "must be one line");

/** RFC 5322 3.6.8: printable ASCII except the colon. */
const headerName = z
  .string()
  .min(1)
  .max(76)
  .regex(/^[!-9;-~]+$/, "must be a header field name");

/** `.exe` or `exe`, any case (kept as written; compared as `.exe`). */
const extension = z
  .string()
  .regex(/^\.?[A-Za-z0-9][A-Za-z0-9_+-]{0,15}$/, "must be a file extension like .exe");

export const ruleMatchSchema = z.strictObject({
  from: addressGlob.optional().describe("envelope sender (MAIL FROM) pattern"),
  to: addressGlob.optional().describe("envelope recipient (RCPT TO) pattern"),
  headerFrom: addressGlob.optional().describe("pattern of an address of the From header"),
  subject: contains.optional().describe("the Subject contains this text (case-insensitive)"),
  header: z
    .strictObject({ name: headerName, contains })
    .optional()
    .describe("a header field of this name contains this text (case-insensitive)"),
  sizeOver: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional()
    .describe("the message as the client sent it is larger than this many bytes"),
  attachmentExtensions: z
    .array(extension)
    .min(1)
    .max(100)
    .optional()
    .describe(
      "a MIME part's file name (Content-Disposition filename or Content-Type name) ends in one of these",
    ),
});

export const ruleSchema = z.strictObject({
  name: ruleName,
  match: ruleMatchSchema.describe("every condition given must hold; none given: every message"),
  action: z.enum(["allow", "hold", "deny"]),
});

export const rulesSchema = z
  .array(ruleSchema)
  .max(maxRules)
  .superRefine((rules, context) => {
    const seen = new Set<string>();
    rules.forEach((rule, index) => {
      if (seen.has(rule.name))
        context.addIssue({
          code: "custom",
          path: [index, "name"],
          message: `duplicate rule name "${rule.name}"`,
        });
      seen.add(rule.name);
    });
  });

/** `PUT /v1/rules`: the version the caller read, and the new ordered list. */
export const ruleSetInputSchema = z.strictObject({
  version: z.number().int().min(0).describe("the version this change is based on (GET /v1/rules)"),
  rules: rulesSchema,
});

export type Rule = z.infer<typeof ruleSchema>;
export type RuleMatch = Rule["match"];
export type RuleAction = Rule["action"];
export type RuleSetInput = z.infer<typeof ruleSetInputSchema>;

/** A project's rules as stored: version 0 with no rules until the first change. */
export interface RuleSet {
  version: number;
  rules: Rule[];
}

/** The first problem of invalid rules as one line naming the field, e.g. `rules.2.match.to: …`. */
export function describeRulesError(error: z.ZodError): string {
  const issue = error.issues[0];
  const field = issue?.path.join(".") || "body";
  return `${field}: ${issue?.message ?? "invalid"}`;
}
