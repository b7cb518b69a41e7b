import type { MxLookup, TxtLookup } from "./dns";
import type { DkimAlgorithm } from "./keys";

export type RecordPurpose = "dkim" | "spf" | "dmarc" | "return-path";

/** A DNS record the domain's owner publishes, as `POST /v1/domains` returns it. */
export interface DnsRecord {
  purpose: RecordPurpose;
  /** `MX`: the return-path record's MX, value `<preference> <host>`. */
  type: "TXT" | "MX";
  name: string;
  value: string;
  /** The DKIM key's selector (dkim records only). */
  selector?: string;
}

/** What a verify found at a record's name: `ok`, `wrong` (something else is there), `missing`,
 * or `lookup_failed` (DNS did not answer; nothing is concluded). */
export type RecordState = "ok" | "wrong" | "missing" | "lookup_failed";

export interface CheckedRecord extends DnsRecord {
  state: RecordState;
  /** The TXT values found at the name that bear on the record (at most 5, each at most 512 characters). */
  found: string[];
}

export interface KeyForRecords {
  selector: string;
  algorithm: DkimAlgorithm;
  publicKey: string;
}

export function dkimRecordName(selector: string, domain: string): string {
  return `${selector}._domainkey.${domain}`;
}

/**
 * The records of a domain: one DKIM record per key (both selectors during a rotation), and SPF
 * and DMARC suggestions. The SPF suggestion names Postern's host (`SMTP_HOSTNAME`) as the sender;
 * an owner relaying through an upstream adds the upstream's `include:`. A verify checks that one
 * SPF record and one DMARC record exist, not what they say: their policy is the owner's choice.
 *
 * With `bounceDomain` (BOUNCE_DOMAIN: VERP, docs/bounces.md), the return-path records too: the
 * MX of the bounce domain, pointing at the host of the inbound role (`SMTP_HOSTNAME`), where
 * bounces and complaints sent to `bounce+<token>@<bounceDomain>` must arrive, and an SPF record
 * for the bounce domain, which receivers check as the envelope sender's domain. They are the
 * same for every domain (the bounce domain is the installation's), and published once by
 * whoever holds the bounce domain.
 */
export function recordsOf(
  domain: string,
  keys: KeyForRecords[],
  smtpHostname: string,
  bounceDomain?: string,
): DnsRecord[] {
  return [
    ...keys.map(
      (key): DnsRecord => ({
        purpose: "dkim",
        type: "TXT",
        name: dkimRecordName(key.selector, domain),
        value: `v=DKIM1; k=${key.algorithm}; p=${key.publicKey}`,
        selector: key.selector,
      }),
    ),
    { purpose: "spf", type: "TXT", name: domain, value: `v=spf1 a:${smtpHostname} ~all` },
    { purpose: "dmarc", type: "TXT", name: `_dmarc.${domain}`, value: "v=DMARC1; p=none; adkim=r; aspf=r" },
    ...(bounceDomain
      ? ([
          { purpose: "return-path", type: "MX", name: bounceDomain, value: `10 ${smtpHostname}` },
          { purpose: "return-path", type: "TXT", name: bounceDomain, value: `v=spf1 a:${smtpHostname} ~all` },
        ] satisfies DnsRecord[])
      : []),
  ];
}

/** RFC 6376 3.6.1 tag=value list, tags lower-cased, whitespace (folding included) removed from values. */
function tags(record: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const part of record.split(";")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    result.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).replace(/\s+/g, ""));
  }
  return result;
}

/** The state of one record against what DNS answers at its name. */
export async function checkRecord(
  record: DnsRecord,
  lookup: { txt: TxtLookup; mx: MxLookup },
): Promise<CheckedRecord> {
  let values: string[];
  try {
    values = await (record.type === "MX" ? lookup.mx : lookup.txt)(record.name);
  } catch {
    return { ...record, state: "lookup_failed", found: [] };
  }
  const shown = (list: string[]) => list.slice(0, 5).map((v) => v.slice(0, 512));
  if (record.type === "MX") {
    // Any MX of the bounce domain that names the inbound host will do: others may back it up.
    const host = record.value.slice(record.value.indexOf(" ") + 1).toLowerCase();
    const state: RecordState = values.includes(host) ? "ok" : values.length > 0 ? "wrong" : "missing";
    return { ...record, state, found: shown(values) };
  }
  switch (record.purpose) {
    case "dkim": {
      // A name may hold other TXT records; the DKIM ones are those with a p= tag (v= is optional).
      const dkim = values.filter((v) => tags(v).has("p"));
      if (dkim.length === 0)
        return { ...record, state: values.length ? "wrong" : "missing", found: shown(values) };
      const expected = tags(record.value);
      const matches = dkim.some((v) => {
        const found = tags(v);
        return found.get("p") === expected.get("p") && (found.get("k") ?? "rsa") === expected.get("k");
      });
      return { ...record, state: matches && dkim.length === 1 ? "ok" : "wrong", found: shown(dkim) };
    }
    case "spf":
    case "return-path":
    case "dmarc": {
      const prefix = record.purpose === "dmarc" ? /^v=DMARC1\s*(;|$)/i : /^v=spf1(\s|$)/i;
      const matching = values.filter((v) => prefix.test(v.trim()));
      // RFC 7208 4.5 and RFC 7489 6.6.3: more than one such record is an error for receivers.
      const state: RecordState = matching.length === 1 ? "ok" : matching.length > 1 ? "wrong" : "missing";
      return { ...record, state, found: shown(matching) };
    }
  }
}
