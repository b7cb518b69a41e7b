import { createHash, randomBytes } from "node:crypto";

/**
 * Formats of the secrets Postern issues. Prefixes make a leaked value recognisable (secret
 * scanners, log greps) and tell at a glance which kind it is. 24 random bytes = 192 bits.
 */
export const smtpKeyPrefix = "pst_smtp_";
export const smtpSecretPrefix = "pst_secret_";
export const apiTokenPrefix = "pst_api_";

/** bcrypt cost for SMTP secrets (the contract asks for at least 10). */
export const bcryptCost = 10;

function random(): string {
  return randomBytes(24).toString("base64url");
}

const smtpKeyShape = new RegExp(`^${smtpKeyPrefix}[A-Za-z0-9_-]{32}$`);

/**
 * An attempted SMTP username as it may be logged and audited: as is only when it has exactly the
 * shape of an API key (which is an identifier), otherwise a placeholder with its length. Clients
 * put all sorts of things there (a secret in the wrong field, `key:secret`, a base64 blob, another
 * service's password), and no pattern can tell which of those is secret.
 */
export function auditableUsername(username: string): string {
  return smtpKeyShape.test(username) ? username : `[not an API key, ${username.length} characters]`;
}

export interface IssuedSmtpCredential {
  /** The SMTP username (public). */
  key: string;
  /** The SMTP password: shown once, stored only as `secretHash`. */
  secret: string;
  secretHash: string;
}

export async function issueSmtpCredential(cost = bcryptCost): Promise<IssuedSmtpCredential> {
  const key = `${smtpKeyPrefix}${random()}`;
  const secret = `${smtpSecretPrefix}${random()}`;
  // Loaded here, not with the module: most operator commands issue no credential.
  const { default: bcrypt } = await import("bcrypt");
  return { key, secret, secretHash: await bcrypt.hash(secret, cost) };
}

export interface IssuedApiToken {
  /** Shown once, stored only as `tokenHash`. */
  token: string;
  tokenHash: string;
  /** Enough of the token to tell tokens apart in listings, not enough to guess it. */
  prefix: string;
}

export function issueApiToken(): IssuedApiToken {
  const token = `${apiTokenPrefix}${random()}`;
  return { token, tokenHash: hashApiToken(token), prefix: token.slice(0, apiTokenPrefix.length + 6) };
}

/** API tokens are high-entropy, so SHA-256 is enough (bcrypt is for guessable secrets). */
export function hashApiToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}
