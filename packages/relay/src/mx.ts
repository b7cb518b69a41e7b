import { Resolver } from "node:dns/promises";

/**
 * Where mail for a domain goes (RFC 5321 §5.1): its MX hosts by preference, each with its
 * addresses; no MX records: the domain's own A/AAAA addresses (the implicit MX); a null MX
 * (RFC 7505: one MX record with the root as exchange): the domain takes no mail at all.
 */
export type MxAnswer =
  | { kind: "hosts"; hosts: { name: string; addresses: string[] }[] }
  | { kind: "null_mx" }
  /** NXDOMAIN, or neither MX nor addresses: the domain cannot receive mail. */
  | { kind: "no_domain"; reason: string }
  /** The resolvers failed (SERVFAIL, timeout, refused): worth another try later. */
  | { kind: "temporary"; reason: string };

export interface MxResolverOptions {
  /** `ip[:port]` of the resolvers (DNS_SERVERS); none: the system's. */
  servers?: string[];
  /** Each look-up, answered from the cache (`hit`) or from DNS (`miss`): a metric's counter. */
  onLookup?: (outcome: "hit" | "miss") => void;
  /** Per query. */
  timeoutMs?: number;
}

/** How long an answer without a TTL of its own (null MX, NXDOMAIN) is kept. */
const negativeTtlSeconds = 300;
const maxTtlSeconds = 3600;
const minTtlSeconds = 1;

/**
 * MX look-ups through node:dns, cached per domain for as long as the records say. node:dns gives
 * no TTL for MX records, so an answer is kept for the shortest TTL of the A/AAAA records it was
 * built from (clamped to 1 s … 1 h); a null MX or a missing domain for 5 minutes; temporary
 * failures are not kept.
 */
export class MxResolver {
  private readonly resolver: Resolver;
  private readonly cache = new Map<string, { answer: MxAnswer; expiresAt: number }>();
  /** Look-ups on their way, per domain: deliveries that miss together wait for one answer. */
  private readonly resolving = new Map<string, Promise<MxAnswer>>();

  constructor(private readonly options: MxResolverOptions = {}) {
    this.resolver = new Resolver({ timeout: options.timeoutMs ?? 5_000, tries: 2 });
    if (options.servers && options.servers.length > 0) this.resolver.setServers(options.servers);
  }

  async lookup(domain: string): Promise<MxAnswer> {
    const key = domain.toLowerCase();
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt > Date.now()) {
      this.options.onLookup?.("hit");
      return cached.answer;
    }
    this.options.onLookup?.("miss");
    const pending = this.resolving.get(key);
    if (pending) return pending;
    const resolving = this.resolve(key).then(({ answer, ttlSeconds }) => {
      if (ttlSeconds > 0) this.cache.set(key, { answer, expiresAt: Date.now() + ttlSeconds * 1000 });
      else this.cache.delete(key);
      return answer;
    });
    this.resolving.set(key, resolving);
    try {
      return await resolving;
    } finally {
      this.resolving.delete(key);
    }
  }

  private async resolve(domain: string): Promise<{ answer: MxAnswer; ttlSeconds: number }> {
    let records: { exchange: string; priority: number }[];
    try {
      records = await this.resolver.resolveMx(domain);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOTFOUND")
        return {
          answer: { kind: "no_domain", reason: `${domain} does not exist (NXDOMAIN)` },
          ttlSeconds: negativeTtlSeconds,
        };
      if (code !== "ENODATA") return temporary(`MX look-up of ${domain} failed (${code ?? "error"})`);
      records = [];
    }
    if (records.some((r) => r.exchange === "" || r.exchange === ".")) {
      return { answer: { kind: "null_mx" }, ttlSeconds: negativeTtlSeconds };
    }
    // No MX: the domain itself is the one host, with preference 0 (RFC 5321 §5.1).
    const exchanges =
      records.length > 0
        ? [...records].sort((a, b) => a.priority - b.priority).map((r) => r.exchange)
        : [domain];
    let ttlSeconds = maxTtlSeconds;
    let temporaryFailure: string | undefined;
    const hosts: { name: string; addresses: string[] }[] = [];
    for (const name of exchanges) {
      const found = await this.addressesOf(name);
      if ("reason" in found) temporaryFailure ??= found.reason;
      else if (found.addresses.length > 0) {
        hosts.push({ name, addresses: found.addresses });
        ttlSeconds = Math.min(ttlSeconds, found.ttlSeconds);
      }
    }
    if (hosts.length > 0)
      return { answer: { kind: "hosts", hosts }, ttlSeconds: Math.max(ttlSeconds, minTtlSeconds) };
    if (temporaryFailure) return temporary(temporaryFailure);
    return {
      answer: { kind: "no_domain", reason: `${domain} has no MX hosts with addresses` },
      ttlSeconds: negativeTtlSeconds,
    };
  }

  private async addressesOf(
    name: string,
  ): Promise<{ addresses: string[]; ttlSeconds: number } | { reason: string }> {
    const settled = await Promise.allSettled([
      this.resolver.resolve4(name, { ttl: true }),
      this.resolver.resolve6(name, { ttl: true }),
    ]);
    const records = settled.flatMap((s) => (s.status === "fulfilled" ? s.value : []));
    if (records.length > 0)
      return {
        addresses: records.map((r) => r.address),
        ttlSeconds: Math.min(...records.map((r) => r.ttl)),
      };
    const codes = settled.map((s) =>
      s.status === "rejected" ? (s.reason as NodeJS.ErrnoException).code : "ENODATA",
    );
    if (codes.every((code) => code === "ENODATA" || code === "ENOTFOUND"))
      return { addresses: [], ttlSeconds: 0 };
    return { reason: `address look-up of ${name} failed (${codes.join(", ")})` };
  }
}

function temporary(reason: string): { answer: MxAnswer; ttlSeconds: number } {
  return { answer: { kind: "temporary", reason }, ttlSeconds: 0 };
}
