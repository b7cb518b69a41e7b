import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface CertificatePair {
  cert: string;
  key: string;
}

/** A self-signed certificate for `hostname`, localhost and 127.0.0.1: development and tests only. */
export async function selfSignedCertificate(hostname: string): Promise<CertificatePair> {
  // Loaded when a certificate is made, once per DATA_DIR: node-forge under it is 2 MB of heap that
  // every process and worker thread would otherwise carry from its start.
  const { generate } = await import("selfsigned");
  const pems = await generate([{ name: "commonName", value: hostname }], {
    keySize: 2048,
    notAfterDate: new Date(Date.now() + 825 * 86_400_000),
    algorithm: "sha256",
    extensions: [
      {
        name: "subjectAltName",
        altNames: [
          { type: 2, value: hostname },
          { type: 2, value: "localhost" },
          { type: 7, ip: "127.0.0.1" },
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/**
 * The certificate used when SMTP_TLS_CERT/SMTP_TLS_KEY are unset: generated once into
 * DATA_DIR/tls and reused, so clients that pin it keep working across restarts.
 */
export async function ensureDevCertificate(
  dataDir: string,
  hostname: string,
): Promise<{ certFile: string; keyFile: string }> {
  const dir = join(dataDir, "tls");
  const certFile = join(dir, "dev-cert.pem");
  const keyFile = join(dir, "dev-key.pem");
  const present = await Promise.all([readFile(certFile), readFile(keyFile)]).then(
    () => true,
    () => false,
  );
  if (!present) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const pair = await selfSignedCertificate(hostname);
    await writeFile(keyFile, pair.key, { mode: 0o600 });
    await writeFile(certFile, pair.cert);
  }
  return { certFile, keyFile };
}
