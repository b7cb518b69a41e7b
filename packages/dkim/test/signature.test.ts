import { createPrivateKey } from "node:crypto";
import {
  type DkimAlgorithm,
  dkimSignatureOf,
  generateDkimKey,
  recordsOf,
  type SigningKey,
} from "@postern/dkim";
import { dkimSign, dkimVerify } from "mailauth";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";

const domain = "signature.example";
const selector = "pst1";

/** Each a case of the canonicalisation: the signature must be the one mailauth's `dkimSign` makes. */
const messages: Record<string, string> = {
  "a plain text message": [
    "From: Sender <news@signature.example>",
    "To: <rcpt@example.net>",
    "Subject: plain",
    "Message-ID: <plain@signature.example>",
    "Date: Mon, 07 Dec 2026 19:00:00 +0000",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "Hello, signed world.",
    "",
  ].join("\r\n"),
  "folded fields, repeated and unsigned fields, runs of white space, trailing empty lines": [
    "Received: from a.example by b.example; Mon, 07 Dec 2026 18:59:00 +0000",
    "Received: from c.example by a.example; Mon, 07 Dec 2026 18:58:00 +0000",
    "from:   Sender \t <news@signature.example>  ",
    "To: <one@example.net>,",
    "\t<two@example.net>",
    "To: <three@example.net>",
    "SUBJECT: a  subject\twith   runs ",
    "X-Unsigned: not in the list",
    "Content-Type: multipart/alternative;",
    ' boundary="b1"',
    "",
    "--b1",
    "Content-Type: text/plain",
    "",
    "a line with trailing space   ",
    "\ta line\twith  tabs \t ",
    "   ",
    "--b1--",
    "",
    "",
    "",
  ].join("\r\n"),
  "an empty body": [
    "From: <news@signature.example>",
    "To: <rcpt@example.net>",
    "Subject: nothing",
    "",
    "",
  ].join("\r\n"),
  "8-bit header and body": [
    "From: =?utf-8?q?J=C3=BCrgen?= <jürgen@signature.example>",
    "To: <rcpt@example.net>",
    "Subject: Grüße aus Köln",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    "Schöne Grüße,",
    "Jürgen",
    "",
  ].join("\r\n"),
};

const keys = {} as Record<DkimAlgorithm, { signing: SigningKey; pem: string; record: string }>;

beforeAll(() => {
  for (const algorithm of ["rsa", "ed25519"] as const) {
    const pair = generateDkimKey(algorithm);
    const record = recordsOf(domain, [{ selector, algorithm, publicKey: pair.publicKey }], "mx.example").find(
      (r) => r.purpose === "dkim",
    );
    keys[algorithm] = {
      signing: { domain, selector, algorithm, privateKey: createPrivateKey(pair.privateKeyPem) },
      pem: pair.privateKeyPem,
      record: record?.value as string,
    };
  }
});
afterEach(() => {
  vi.useRealTimers();
});

async function verify(signed: Buffer, record: string) {
  const { results } = await dkimVerify(signed, {
    resolver: async (name: string) => (name === `${selector}._domainkey.${domain}` ? [[record]] : []),
  });
  return results;
}

describe("dkimSignatureOf", () => {
  for (const algorithm of ["rsa", "ed25519"] as const)
    for (const [name, text] of Object.entries(messages))
      it(`${algorithm}, ${name}: the field mailauth's dkimSign makes, and its verifier passes it`, async () => {
        // One clock for both signers: t= is the only input that differs otherwise.
        vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-12-07T19:00:00.600Z") });
        const raw = Buffer.from(text);
        const { pem, signing, record } = keys[algorithm];
        const ours = await dkimSignatureOf(raw, signing);

        const options = {
          signingDomain: domain,
          selector,
          privateKey: pem,
          algorithm: `${algorithm}-sha256`,
          canonicalization: "relaxed/relaxed",
          signTime: new Date(),
        };
        const theirs = await dkimSign(raw, { ...options, signatureData: [options] });
        expect(theirs.errors).toEqual([]);
        expect(ours).toBe(theirs.signatures);
        // Unfolded: the field as a receiver reads it.
        expect(ours.replace(/\r\n[ \t]/g, " ")).toMatch(
          `DKIM-Signature: v=1; a=${algorithm}-sha256; c=relaxed/relaxed; d=signature.example;`,
        );
        expect(ours).toContain("t=1796670000;");

        vi.useRealTimers();
        const [result] = await verify(Buffer.concat([Buffer.from(ours), raw]), record);
        expect(result?.status.result).toBe("pass");
        expect(result?.signingDomain).toBe(domain);
      });

  it("signs a message without an empty line after its fields as one with an empty body", async () => {
    // mailauth's dkimSign makes no signature for it (it waits for the end of the header section);
    // its verifier reads the same message with the empty line added, which has the same
    // canonical header and (empty) body.
    const raw = Buffer.from(
      "From: <news@signature.example>\r\nTo: <rcpt@example.net>\r\nSubject: bodiless\r\n",
    );
    for (const algorithm of ["rsa", "ed25519"] as const) {
      const { signing, record } = keys[algorithm];
      const signature = await dkimSignatureOf(raw, signing);
      const [result] = await verify(
        Buffer.concat([Buffer.from(signature), raw, Buffer.from("\r\n")]),
        record,
      );
      expect(result?.status.result).toBe("pass");
    }
  });

  it("signs what a verifier then finds altered when a signed field changes", async () => {
    const raw = Buffer.from(messages["a plain text message"] as string);
    const { signing, record } = keys.rsa;
    const signed = Buffer.concat([Buffer.from(await dkimSignatureOf(raw, signing)), raw]);
    const altered = Buffer.from(signed.toString().replace("Subject: plain", "Subject: forged"));
    const [result] = await verify(altered, record);
    expect(result?.status.result).toBe("fail");
    expect(result?.status.comment).toMatch(/signature/);
  });
});
