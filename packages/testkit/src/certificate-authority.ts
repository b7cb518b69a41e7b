import type { CertificatePair } from "@postern/embedded";

/**
 * A certificate authority of a test's own, for TLS that must verify (an MX host's certificate
 * under the `verify` policy, an MTA-STS policy served over HTTPS): what it issues is trusted by
 * whoever is given its `cert`, and by nothing else.
 */
export class TestCertificateAuthority {
  private constructor(private readonly root: CertificatePair) {}

  static async create(): Promise<TestCertificateAuthority> {
    const { generate } = await import("selfsigned");
    const pems = await generate([{ name: "commonName", value: "Postern test CA" }], {
      keySize: 2048,
      algorithm: "sha256",
      extensions: [
        { name: "basicConstraints", cA: true, critical: true },
        { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
      ],
    });
    return new TestCertificateAuthority({ cert: pems.cert, key: pems.private });
  }

  /** The CA's certificate, to trust. */
  get cert(): string {
    return this.root.cert;
  }

  /** A server certificate for `hostnames` (the first one its subject), signed by this CA. */
  async issue(...hostnames: string[]): Promise<CertificatePair> {
    const { generate } = await import("selfsigned");
    const pems = await generate([{ name: "commonName", value: hostnames[0] ?? "localhost" }], {
      keySize: 2048,
      algorithm: "sha256",
      ca: this.root,
      extensions: [
        { name: "basicConstraints", cA: false },
        { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
        { name: "extKeyUsage", serverAuth: true },
        { name: "subjectAltName", altNames: hostnames.map((value) => ({ type: 2, value })) },
      ],
    });
    return { cert: pems.cert, key: pems.private };
  }
}
