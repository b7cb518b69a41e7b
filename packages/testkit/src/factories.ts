import { issueApiToken, issueSmtpCredential, sealSecret } from "@postern/auth";
import type { ResolvedConfig } from "@postern/config";
import type { Database, Project } from "@postern/db";
import { parseUpstreamUrl } from "@postern/relay";

export interface ProjectFixture {
  project: Project;
  smtp: { credentialId: string; username: string; password: string };
  apiToken: { id: string; token: string };
}

export interface ProjectFixtureInput {
  name?: string;
  upstream?: string;
  quotaPerMinute?: number;
  quotaDaily?: number;
  maxRecipients?: number;
  senderDomains?: string[];
  status?: "active" | "suspended";
}

/** A project with one SMTP credential and one API token, written straight to the database. */
export async function createProjectFixture(
  db: Database,
  config: Pick<ResolvedConfig, "encryptionKey">,
  input: ProjectFixtureInput = {},
): Promise<ProjectFixture> {
  const upstream = parseUpstreamUrl(input.upstream ?? "smtp://127.0.0.1:1");
  const project = await db.project.create({
    data: {
      name: input.name ?? "Test project",
      status: input.status ?? "active",
      quotaPerMinute: input.quotaPerMinute ?? 1000,
      quotaDaily: input.quotaDaily ?? 100_000,
      maxRecipients: input.maxRecipients ?? 50,
      senderDomains: input.senderDomains ?? [],
      upstreamUrl: upstream.publicUrl,
      upstreamSecret: upstream.password ? sealSecret(upstream.password, config.encryptionKey) : null,
    },
  });
  const smtp = await createCredentialFixture(db, project.id);
  const token = issueApiToken();
  const apiToken = await db.apiToken.create({
    data: { projectId: project.id, tokenHash: token.tokenHash, prefix: token.prefix },
  });
  return { project, smtp, apiToken: { id: apiToken.id, token: token.token } };
}

export async function createCredentialFixture(db: Database, projectId: string) {
  const issued = await issueSmtpCredential();
  const row = await db.smtpCredential.create({
    data: { projectId, key: issued.key, secretHash: issued.secretHash },
  });
  return { credentialId: row.id, username: issued.key, password: issued.secret };
}
