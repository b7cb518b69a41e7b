import { z } from "zod";

/**
 * The shapes of project settings as operators give them, shared by `/admin` (request validation
 * and OpenAPI) and the CLI, so both accept and refuse exactly the same input.
 */

// RFC 1035 host names, lower-cased: sender domains are compared case-insensitively.
export const domainName = z
  .string()
  .toLowerCase()
  .regex(
    /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/,
    "must be a domain name like example.com",
  );

const quota = z.object({
  perMinute: z.number().int().positive().max(1_000_000).optional().describe("recipients per minute"),
  daily: z.number().int().positive().max(100_000_000).optional().describe("recipients per day"),
});

export const projectName = z.string().trim().min(1).max(200);

const localAddresses = z
  .array(z.union([z.ipv4(), z.ipv6()], { error: "must be an IPv4 or IPv6 address" }))
  .max(64)
  .refine((list) => new Set(list).size === list.length, "must not list an address twice")
  .describe(
    "source addresses of direct delivery's connections, used in turn (each must be an address of this host); empty: the system's choice",
  );

/** What a project does with what it accepts (docs/rules.md: holds, duplicates, sandbox). */
const acceptanceSettings = {
  mode: z
    .enum(["live", "sandbox"])
    .optional()
    .describe("sandbox: every check applies, messages are stored as sandboxed and never delivered"),
  holdTtlMinutes: z
    .number()
    .int()
    .min(1)
    .max(43_200)
    .optional()
    .describe(
      "minutes a held message waits for approve or deny before holdExpiry settles it (at most 30 days)",
    ),
  holdExpiry: z
    .enum(["approve", "deny"])
    .optional()
    .describe("what becomes of a held message nobody approved or denied within holdTtlMinutes"),
  dedupWindowSeconds: z
    .number()
    .int()
    .min(0)
    .max(86_400)
    .optional()
    .describe("a resubmission of a message within this many seconds is answered with the first id; 0: off"),
  autoSuppress: z
    .boolean()
    .optional()
    .describe(
      "add a recipient to the suppressions when the upstream answers that it does not exist (5.1.x); default on",
    ),
  returnPath: z
    .enum(["sender", "verp"])
    .optional()
    .describe(
      "the envelope sender towards the upstream: `sender` (as given, the default) or `verp` (bounce+<token>@BOUNCE_DOMAIN, so later bounces and complaints come back to Postern; needs BOUNCE_DOMAIN)",
    ),
};

export const projectInputSchema = z.object({
  name: projectName,
  upstream: z
    .string()
    .min(1)
    .max(2000)
    .describe(
      "smtp://[user:pass@]host:port[?tls=required|none][&verify=false] or smtps://[user:pass@]host:port[?verify=false]",
    ),
  quota: quota.optional(),
  senderDomains: z.array(domainName).max(1000).optional().describe("empty: any sender domain"),
  maxRecipients: z.number().int().positive().max(10_000).optional(),
});

export const projectPatchSchema = z
  .object({
    name: projectName.optional(),
    upstream: projectInputSchema.shape.upstream.optional(),
    quota: quota.optional(),
    senderDomains: z.array(domainName).max(1000).optional(),
    maxRecipients: z.number().int().positive().max(10_000).optional(),
    status: z.enum(["active", "suspended"]).optional(),
    ...acceptanceSettings,
    requireVerifiedDomain: z
      .boolean()
      .optional()
      .describe("refuse messages whose From domain is not a verified domain of the project (/v1/domains)"),
    localAddresses: localAddresses.optional(),
  })
  .refine(
    (patch) => Object.values(patch).some((v) => v !== undefined),
    "give at least one setting to change",
  );
