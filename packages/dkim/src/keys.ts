import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";

export type DkimAlgorithm = "rsa" | "ed25519";

/** A DKIM key pair as Postern keeps it: the private key as PKCS#8 PEM, the public one as `p=`. */
export interface DkimKeyPair {
  algorithm: DkimAlgorithm;
  privateKeyPem: string;
  /** The `p=` value of the DKIM TXT record. */
  publicKey: string;
}

/** RSA keys shorter than this are refused on import: RFC 8301 requires at least 1024 bits, and
 * receivers such as Gmail treat 1024 as the floor; 2048 is what Postern generates. */
const minRsaBits = 1024;
const maxRsaBits = 4096;

export function generateDkimKey(algorithm: DkimAlgorithm): DkimKeyPair {
  const { privateKey } =
    algorithm === "rsa"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ed25519");
  return pairOf(privateKey);
}

export type KeyImportRefusal = { reason: "invalid_key"; message: string };

/** A private key given as PEM (PKCS#1, PKCS#8 or SEC1 as node:crypto reads them), checked. */
export function importDkimKey(pem: string): DkimKeyPair | KeyImportRefusal {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    return { reason: "invalid_key", message: "privateKey: not a PEM private key" };
  }
  if (privateKey.asymmetricKeyType === "rsa") {
    const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < minRsaBits || bits > maxRsaBits)
      return {
        reason: "invalid_key",
        message: `privateKey: an RSA key of ${bits} bits; DKIM keys are ${minRsaBits} to ${maxRsaBits} bits`,
      };
  } else if (privateKey.asymmetricKeyType !== "ed25519") {
    return {
      reason: "invalid_key",
      message: `privateKey: a ${privateKey.asymmetricKeyType} key; DKIM signs with RSA or Ed25519`,
    };
  }
  return pairOf(privateKey);
}

function pairOf(privateKey: KeyObject): DkimKeyPair {
  const publicKey = createPublicKey(privateKey);
  const algorithm: DkimAlgorithm = privateKey.asymmetricKeyType === "ed25519" ? "ed25519" : "rsa";
  const spki = publicKey.export({ type: "spki", format: "der" });
  return {
    algorithm,
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    // RFC 6376 3.6.1: p= of an RSA key is its SubjectPublicKeyInfo; RFC 8463 3: p= of an Ed25519
    // key is the raw 32-byte key, the last 32 bytes of its SubjectPublicKeyInfo.
    publicKey: (algorithm === "rsa" ? spki : spki.subarray(spki.length - 32)).toString("base64"),
  };
}
