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
  mode: true,
} as const;

export function toProjectPolicy(row: ProjectPolicy): ProjectPolicy {
  return { ...row, senderDomains: row.senderDomains.map((domain) => domain.toLowerCase()) };
}
