import { freePorts } from "@postern/embedded";

/** HTTP_PORT, SMTP_PORT and SMTPS_PORT for a `postern start`: free a moment ago, no two the same. */
export async function listenerPorts(): Promise<Record<"HTTP_PORT" | "SMTP_PORT" | "SMTPS_PORT", string>> {
  const [http, smtp, smtps] = await freePorts(3);
  return { HTTP_PORT: String(http), SMTP_PORT: String(smtp), SMTPS_PORT: String(smtps) };
}
