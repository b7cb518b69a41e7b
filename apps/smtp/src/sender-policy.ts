import type { ProjectPolicy } from "@postern/auth";
import { asciiDomain, domainOf, type HeaderSummary } from "./message";

/**
 * The sender checks of a project's policy, shared by SMTP and HTTP submission so that both refuse
 * the same senders for the same reasons: the envelope sender's domain, and the message's From
 * header (one field, with addresses of allowed domains).
 */

/** Sender domains match exactly or as a parent domain (example.com allows mail.example.com). */
export function senderDomainAllowed(project: Pick<ProjectPolicy, "senderDomains">, address: string): boolean {
  const allowed = project.senderDomains;
  if (allowed.length === 0) return true;
  if (address === "") return false;
  const domain = domainOf(address);
  return allowed.some((name) => {
    const d = asciiDomain(name);
    return domain === d || domain.endsWith(`.${d}`);
  });
}

export type HeaderFromRefusal =
  /** RFC 5322 3.6 allows one From field: with two, which one a reader shows is the reader's choice. */
  | { reason: "header_from_multiple"; fromFields: number }
  /** Sender domains are set and no From address can be checked against them. */
  | { reason: "header_from"; missing: true }
  | { reason: "header_from"; headerFrom: string }
  /** The project requires a verified domain (DKIM record found) and the From domain is not one. */
  | { reason: "header_from_unverified"; headerFrom: string };

/** Why the message's From header is refused for this project, or undefined when it is not. */
export function checkHeaderFrom(
  project: Pick<ProjectPolicy, "senderDomains" | "requireVerifiedDomain" | "verifiedDomains">,
  headers: HeaderSummary,
): HeaderFromRefusal | undefined {
  if (headers.fromFields > 1) return { reason: "header_from_multiple", fromFields: headers.fromFields };
  if (project.senderDomains.length === 0 && !project.requireVerifiedDomain) return undefined;
  if (headers.fromFields === 0 || headers.from.length === 0) return { reason: "header_from", missing: true };
  const foreign = headers.from.find((from) => !senderDomainAllowed(project, from));
  if (foreign) return { reason: "header_from", headerFrom: foreign };
  if (!project.requireVerifiedDomain) return undefined;
  // A verified domain covers its subdomains, as a sender domain does (and as DKIM's relaxed
  // alignment lets its key sign for them).
  const verified = project.verifiedDomains;
  const unverified = headers.from.find(
    (from) => verified.length === 0 || !senderDomainAllowed({ senderDomains: verified }, from),
  );
  return unverified ? { reason: "header_from_unverified", headerFrom: unverified } : undefined;
}
