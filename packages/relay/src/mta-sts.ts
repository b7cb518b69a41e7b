import { Resolver } from "node:dns/promises";
import type { DNSResolver, MTASTSPolicy } from "mailauth";
import { getPolicy, validateMx } from "mailauth/lib/mta-sts.js";

/**
 * MTA-STS (RFC 8461) for direct delivery under the `verify` TLS policy: a recipient domain that
 * publishes `_mta-sts.<domain>` TXT and a policy at `https://mta-sts.<domain>/.well-known/mta-sts.txt`
 * lists the MX hosts that may receive its mail; in `enforce` mode an MX host not listed is not
 * sent to (and a listed one only over TLS with a certificate valid for its name, which `verify`
 * requires anyway). Fetching and parsing are mailauth's; the look-ups go to DNS_SERVERS.
 *
 * Policies are kept for their `max_age`, at most an hour, after which the TXT record's id is read
 * again (and the policy fetched again only if it changed). A domain without a policy is asked again
 * after five minutes. A fetch that fails keeps the policy known before, as RFC 8461 §5.1 asks, or
 * goes without one.
 */
export type MtaStsVerdict =
  | { allowed: true; mode: "none" | "testing" | "enforce" }
  | { allowed: false; reason: string };

const recheckAfterMs = 3_600_000;
const noPolicyRecheckMs = 300_000;

export class MtaStsPolicies {
  /** Per domain, its policy (being fetched, or known) and when to look again. */
  private readonly cache = new Map<string, { policy: Promise<MTASTSPolicy>; checkAgainAt: number }>();
  private readonly resolve: DNSResolver;

  constructor(options: { servers?: string[]; timeoutMs?: number } = {}) {
    const resolver = new Resolver({ timeout: options.timeoutMs ?? 5_000, tries: 2 });
    if (options.servers && options.servers.length > 0) resolver.setServers(options.servers);
    this.resolve = (name, type) => resolver.resolve(name, type) as Promise<string[][] | string[]>;
  }

  /** May mail for `domain` go to the MX host `mxName`? */
  async check(domain: string, mxName: string): Promise<MtaStsVerdict> {
    const policy = await this.policyOf(domain.toLowerCase());
    const mode = policy.mode;
    if (mode !== "enforce" && mode !== "testing") return { allowed: true, mode: "none" };
    const validation = validateMx(mxName, policy);
    // testing: a mismatch is only to be reported (RFC 8461 §5), the mail goes.
    if (validation.valid || mode === "testing") return { allowed: true, mode };
    return {
      allowed: false,
      reason: `MX host ${mxName} is not in the MTA-STS policy of ${domain} (mode enforce, mx: ${(policy.mx ?? []).join(", ")})`,
    };
  }

  /** Deliveries to a domain at the same moment share one look-up. */
  private policyOf(domain: string): Promise<MTASTSPolicy> {
    const cached = this.cache.get(domain);
    if (cached && cached.checkAgainAt > Date.now()) return cached.policy;
    const entry = { policy: this.fetch(domain, cached?.policy), checkAgainAt: Number.POSITIVE_INFINITY };
    this.cache.set(domain, entry);
    // mailauth answers its failures as statuses; anything it throws is not kept for the next one.
    entry.policy.catch(() => this.cache.delete(domain));
    return entry.policy;
  }

  private async fetch(domain: string, known: Promise<MTASTSPolicy> | undefined): Promise<MTASTSPolicy> {
    const { policy, status } = await getPolicy(domain, await known, { resolver: this.resolve });
    const found = status === "found" || status === "renewed";
    const maxAgeMs = (policy.maxAge ?? 0) * 1000;
    const entry = this.cache.get(domain);
    if (entry)
      entry.checkAgainAt = Date.now() + (found ? Math.min(maxAgeMs, recheckAfterMs) : noPolicyRecheckMs);
    return policy;
  }
}
