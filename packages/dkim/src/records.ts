import type { TxtLookup } from "./dns";
import type { DkimAlgorithm } from "./keys";

export type RecordPurpose = "dkim" | "spf" | "dmarc";

/** A DNS record the domain's owner publishes, as `POST /v1/domains` returns it. */
export interface DnsRecord {
  purpose: RecordPurpose;
  type: "TXT";
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
 */
export function recordsOf(domain: string, keys: KeyForRecords[], smtpHostname: string): DnsRecord[] {
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
export async function checkRecord(record: DnsRecord, lookup: TxtLookup): Promise<CheckedRecord> {
  let values: string[];
  try {
    values = await lookup(record.name);
  } catch {
    return { ...record, state: "lookup_failed", found: [] };
  }
  const shown = (list: string[]) => list.slice(0, 5).map((v) => v.slice(0, 512));
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
    case "dmarc": {
      const prefix = record.purpose === "spf" ? /^v=spf1(\s|$)/i : /^v=DMARC1\s*(;|$)/i;
      const matching = values.filter((v) => prefix.test(v.trim()));
      // RFC 7208 4.5 and RFC 7489 6.6.3: more than one such record is an error for receivers.
      const state: RecordState = matching.length === 1 ? "ok" : matching.length > 1 ? "wrong" : "missing";
      return { ...record, state, found: shown(matching) };
    }
  }
}
