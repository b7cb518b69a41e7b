import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";

/**
 * VERP return paths (docs/bounces.md): the envelope sender `bounce+<token>@BOUNCE_DOMAIN` of a
 * message sent by a project with `returnPath: "verp"`, so that a bounce or a complaint sent back
 * to it names the message it is about. The token is the message's id and an HMAC-SHA256 of it,
 * truncated to 96 bits, under a key derived from ENCRYPTION_KEY (HKDF-SHA256 with a label of its
 * own, so the key that seals upstream passwords is never used for anything else): nobody without
 * the key can make a token that passes, so nobody can have a recipient marked bounced or
 * suppressed by forging a report.
 *
 * The token names the message, not the recipient: one envelope carries all of a message's
 * recipients (one per recipient would multiply connections and transactions by the recipients),
 * and the report's own fields (RFC 3464 Final-Recipient and Original-Recipient, RFC 5965
 * Original-Rcpt-To) say which recipient it is about. For a message with one recipient, by far
 * the most common, the token names that recipient too.
 *
 * Encoded in base32 (RFC 4648, lower-case, no padding): 28 bytes in 45 characters, case-
 * insensitive (an MTA may change the case of a local part), so the local part is 52 octets,
 * within RFC 5321's 64.
 */

export const verpLocalPrefix = "bounce+";

const idBytes = 16;
const macBytes = 12;
const tokenBytes = idBytes + macBytes;
const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
const tokenLength = Math.ceil((tokenBytes * 8) / 5);
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an address of the bounce domain says. */
export type ReturnPathReading =
  | { ok: true; messageId: string }
  /** Not an address of BOUNCE_DOMAIN at all. */
  | { ok: false; reason: "other_domain" }
  /** Of BOUNCE_DOMAIN, but not `bounce+<token>` (e.g. postmaster@). */
  | { ok: false; reason: "not_verp" }
  /** `bounce+<token>` whose token was not made with this installation's key. */
  | { ok: false; reason: "forged" };

export interface ReturnPaths {
  /** BOUNCE_DOMAIN, lower-case. */
  readonly domain: string;
  /** `bounce+<token>@BOUNCE_DOMAIN` for the message. */
  addressFor(messageId: string): string;
  /** Reads an address (any case); a token is accepted only if its MAC checks. */
  read(address: string): ReturnPathReading;
}

export function createReturnPaths(options: { encryptionKey: Buffer; bounceDomain: string }): ReturnPaths {
  const key = Buffer.from(
    hkdfSync("sha256", options.encryptionKey, Buffer.alloc(0), "postern verp return path v1", 32),
  );
  const domain = options.bounceDomain.toLowerCase();
  const macOf = (id: Buffer) => createHmac("sha256", key).update(id).digest().subarray(0, macBytes);

  return {
    domain,
    addressFor(messageId) {
      if (!uuidPattern.test(messageId)) throw new Error(`not a message id: ${messageId}`);
      const id = Buffer.from(messageId.replaceAll("-", ""), "hex");
      return `${verpLocalPrefix}${base32(Buffer.concat([id, macOf(id)]))}@${domain}`;
    },
    read(address) {
      const at = address.lastIndexOf("@");
      if (at < 0 || address.slice(at + 1).toLowerCase() !== domain)
        return { ok: false, reason: "other_domain" };
      const local = address.slice(0, at).toLowerCase();
      if (!local.startsWith(verpLocalPrefix)) return { ok: false, reason: "not_verp" };
      const bytes = fromBase32(local.slice(verpLocalPrefix.length));
      if (!bytes) return { ok: false, reason: "forged" };
      const id = bytes.subarray(0, idBytes);
      if (!timingSafeEqual(bytes.subarray(idBytes), macOf(id))) return { ok: false, reason: "forged" };
      const hex = id.toString("hex");
      return {
        ok: true,
        messageId: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
      };
    },
  };
}

function base32(bytes: Buffer): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** The token's bytes; undefined unless it is exactly a token's length of base32 characters. */
function fromBase32(text: string): Buffer | undefined {
  if (text.length !== tokenLength) return undefined;
  const bytes = Buffer.alloc(tokenBytes);
  let bits = 0;
  let value = 0;
  let index = 0;
  for (const char of text) {
    const digit = alphabet.indexOf(char);
    if (digit < 0) return undefined;
    value = ((value << 5) | digit) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bytes[index++] = (value >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  return bytes;
}
