/** What the SMTP session and HTTP submission need to know about the project they submit to. */
export interface ProjectPolicy {
  id: string;
  status: "active" | "suspended";
  quotaPerMinute: number;
  quotaDaily: number;
  maxRecipients: number;
  /** Lower-case; empty: any sender. */
  senderDomains: string[];
  /** Duplicate suppression's window; 0: off (docs/rules.md, Duplicates). */
  dedupWindowSeconds: number;
  /**
   * Bumped by each change of the project's suppressions (0: none ever): RCPT looks recipients up
   * by it (packages/projects SuppressionBook), and not at all at 0.
   */
  suppressionsVersion: number;
  /** The project's routes version (0: none): RCPT reads the routes by it (packages/projects RouteBook). */
  routesVersion: number;
  /** Only messages whose From domain is (under) one of `verifiedDomains` are accepted. */
  requireVerifiedDomain: boolean;
  /** Lower-case: the project's domains that a verify found a DKIM record of (packages/dkim). */
  verifiedDomains: string[];
  /** `sandbox`: messages are stored as sandboxed and never delivered (docs/rules.md, Sandbox). */
  mode: "live" | "sandbox";
}

/** The Prisma `select` of a project's policy: one list, whichever way the project is reached. */
export const projectPolicySelect = {
  id: true,
  status: true,
  quotaPerMinute: true,
  quotaDaily: true,
  maxRecipients: true,
  senderDomains: true,
  dedupWindowSeconds: true,
  routesVersion: true,
  suppressionsVersion: true,
  requireVerifiedDomain: true,
  domains: { where: { verifiedAt: { not: null } }, select: { domain: true } },
  mode: true,
} as const;

/** A row read with `projectPolicySelect`. */
export type ProjectPolicyRow = Omit<ProjectPolicy, "verifiedDomains"> & { domains: { domain: string }[] };

export function toProjectPolicy({ domains, ...row }: ProjectPolicyRow): ProjectPolicy {
  return {
    ...row,
    senderDomains: row.senderDomains.map((domain) => domain.toLowerCase()),
    verifiedDomains: domains.map((d) => d.domain.toLowerCase()),
  };
}
