/**
 * One DKIM-Signature field (RFC 6376, `relaxed/relaxed`, `rsa-sha256` or `ed25519-sha256` of RFC
 * 8463) for a message, made of mailauth's own building blocks, the ones its `dkimSign` is made of:
 * its header parser, its default list of signed fields, its relaxed header and body
 * canonicalisation and its formatting of the field. What `dkimSign` adds around them, and this
 * leaves out, is per-message overhead: the private key read from PEM on every call (here a
 * KeyObject read once, when a project's keys are loaded) and the message written through a
 * Writable that scans the header byte by byte and waits a `setImmediate` per chunk.
 *
 * The signature itself is made on libuv's thread pool (`crypto.sign` with a callback): an
 * RSA-2048 signature is about half a millisecond of CPU that the delivery thread's event loop
 * spends on other deliveries meanwhile.
 *
 * The message is taken as Postern stores it: every line ends in CRLF (the SMTP side and HTTP
 * submission refuse a bare CR and store a bare LF as CRLF), so the bytes signed are the bytes the
 * SMTP client sends.
 */
import { createHash, type KeyObject, sign } from "node:crypto";
import { dkimBody } from "mailauth/lib/dkim/body/index.js";
import { generateCanonicalizedHeader } from "mailauth/lib/dkim/header/index.js";
import { formatSignatureHeaderLine, getSigningHeaderLines, parseHeaders } from "mailauth/lib/tools.js";
import type { DkimAlgorithm } from "./keys";

/** A key that signs for a domain, read once from its PEM. */
export interface SigningKey {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  privateKey: KeyObject;
}

const headerEnd = Buffer.from("\r\n\r\n");

/** The `DKIM-Signature: …` field for `raw`, folded, with its CRLF: to be prepended to it. */
export async function dkimSignatureOf(raw: Buffer, key: SigningKey): Promise<string> {
  // The header section ends at the first empty line; a message without one is all header.
  const end = raw.indexOf(headerEnd);
  const head = end < 0 ? raw : raw.subarray(0, end + 2);
  const body = end < 0 ? raw.subarray(raw.length) : raw.subarray(end + 4);

  const bodyHash = dkimBody("relaxed", "sha256", false);
  bodyHash.update(body);
  const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader(
    "DKIM",
    getSigningHeaderLines(parseHeaders(head).parsed),
    {
      signingDomain: key.domain,
      selector: key.selector,
      algorithm: `${key.algorithm}-sha256`,
      canonicalization: "relaxed/relaxed",
      bodyHash: bodyHash.digest("base64"),
      // Given, so that `t=` is the same in the signed data and in the field written below (left
      // out, each formatting would read the clock, and a second may pass in between).
      signTime: new Date(),
    },
  );
  const signature =
    key.algorithm === "rsa"
      ? await signOnThreadPool("sha256", canonicalizedHeader, key.privateKey)
      : // RFC 8463 3: Ed25519 signs the SHA-256 hash of the header data (PureEdDSA over the hash).
        await signOnThreadPool(
          null,
          createHash("sha256").update(canonicalizedHeader).digest(),
          key.privateKey,
        );
  return `${formatSignatureHeaderLine("DKIM", { ...dkimHeaderOpts, b: signature.toString("base64") }, true)}\r\n`;
}

function signOnThreadPool(digest: "sha256" | null, data: Buffer, privateKey: KeyObject): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    sign(digest, data, privateKey, (error, signature) => (error ? reject(error) : resolve(signature))),
  );
}
