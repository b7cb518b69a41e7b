import type { Project } from "@postern/db";

/** How a project is shown to operators, by the API and the CLI alike: never its upstream password. */
export function projectView(project: Project) {
  return {
    id: project.id,
    name: project.name,
    status: project.status,
    upstream: project.upstreamUrl,
    quota: { perMinute: project.quotaPerMinute, daily: project.quotaDaily },
    maxRecipients: project.maxRecipients,
    senderDomains: project.senderDomains,
    ...projectSettingsView(project),
    requireVerifiedDomain: project.requireVerifiedDomain,
    localAddresses: project.localAddresses,
    createdAt: project.createdAt.toISOString(),
    updatedAt: project.updatedAt.toISOString(),
  };
}

export type ProjectView = ReturnType<typeof projectView>;

/** The settings of what a project does with what it accepts: for its operator and for itself (GET /v1/project). */
export function projectSettingsView(project: Project) {
  return {
    mode: project.mode,
    holdTtlMinutes: project.holdTtlMinutes,
    holdExpiry: project.holdExpiry,
    dedupWindowSeconds: project.dedupWindowSeconds,
    autoSuppress: project.autoSuppress,
    returnPath: project.returnPath,
  };
}

const iso = (date: Date | null) => date?.toISOString() ?? null;

interface Usage {
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** A project with the public parts of its credentials and tokens. */
export function projectDetailView(
  project: Project & {
    credentials: (Usage & { id: string; key: string })[];
    tokens: (Usage & { id: string; prefix: string })[];
  },
) {
  const usage = (row: Usage) => ({
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: iso(row.lastUsedAt),
    revokedAt: iso(row.revokedAt),
  });
  return {
    ...projectView(project),
    credentials: project.credentials.map((c) => ({ id: c.id, username: c.key, ...usage(c) })),
    tokens: project.tokens.map((t) => ({ id: t.id, prefix: t.prefix, ...usage(t) })),
  };
}
