// mailauth's DKIM building blocks, the modules its own signer (lib/dkim/dkim-signer.js) is made
// of. They are CommonJS without typings of their own; these are the parts signature.ts uses,
// typed as mailauth 4 defines them.

declare module "mailauth/lib/tools.js" {
  /** One header field: its name in lower case and as written, and its lines (folding kept). */
  export interface ParsedHeader {
    key: string | null;
    casedKey: string | undefined;
    line: Buffer;
  }

  /** The fields a signature covers, bottom-up, and their names for `h=`. */
  export interface SigningHeaderLines {
    keys: string;
    headers: ParsedHeader[];
  }

  /** A message's header section (the blank line may be included) split into fields. */
  export function parseHeaders(head: Buffer): { parsed: ParsedHeader[]; original: Buffer };

  /** The fields to sign, from `fieldNames` (colon-separated) or mailauth's default list. */
  export function getSigningHeaderLines(parsed: ParsedHeader[], fieldNames?: string): SigningHeaderLines;

  /** `DKIM-Signature: v=1; a=…` from its tag values, folded when `folded`. */
  export function formatSignatureHeaderLine(
    type: "DKIM",
    values: Record<string, unknown>,
    folded: boolean,
  ): string;
}

declare module "mailauth/lib/dkim/body/index.js" {
  /** A body hash under a canonicalisation (RFC 6376 3.4.3/3.4.4), fed the body in chunks. */
  export interface BodyHash {
    update(chunk: Buffer): void;
    digest(encoding: "base64"): string;
  }

  export function dkimBody(
    canonicalization: "relaxed" | "simple",
    hashAlgorithm: "sha256",
    maxBodyLength: number | false,
  ): BodyHash;
}

declare module "mailauth/lib/dkim/header/index.js" {
  import type { SigningHeaderLines } from "mailauth/lib/tools.js";

  /**
   * The header data a DKIM signature signs (RFC 6376 3.7): the signed fields canonicalised, then
   * the DKIM-Signature field itself with an empty `b=`; and the tag values of that field.
   */
  export function generateCanonicalizedHeader(
    type: "DKIM",
    signingHeaderLines: SigningHeaderLines,
    options: {
      signingDomain: string;
      selector: string;
      algorithm: string;
      canonicalization: string;
      bodyHash: string;
      signTime: Date;
    },
  ): { canonicalizedHeader: Buffer; dkimHeaderOpts: Record<string, unknown> };
}
