// Duplicate suppression's fingerprint: what hashing a message while it is read costs per MiB.
// Run: npx tsx bench/fingerprint-cost.ts   (no services; CPU only)
// The SMTP reader (`readMessageData`) over a message in 16 KiB chunks, as TLS hands them over,
// with and without the fingerprint's hash fed chunk by chunk; medians of alternating runs, in
// CPU time.
import { Readable } from "node:stream";
import { startFingerprint } from "@postern/messages";
import { observeContent, readMessageData } from "@postern/smtp";

const holder = { take: async () => undefined, release: () => {} };
const line = Buffer.from("The quick brown fox jumps over the lazy dog, again and again and again.\r\n");

function chunksOf(mib: number): Buffer[] {
  const total = mib * 1024 * 1024;
  const message = Buffer.alloc(total);
  for (let i = 0; i < total; i += line.length) line.copy(message, i);
  message.write("\r\n", total - 2);
  const chunks: Buffer[] = [];
  for (let i = 0; i < total; i += 16384) chunks.push(message.subarray(i, Math.min(total, i + 16384)));
  return chunks;
}

/** CPU time (user and system) of one read: on a shared machine, less noisy than the wall clock. */
async function readMs(chunks: Buffer[], fingerprinted: boolean): Promise<number> {
  const started = process.cpuUsage();
  const hash = fingerprinted
    ? startFingerprint({ mailFrom: "app@example.com", recipients: ["user@example.net"] }, "message")
    : undefined;
  const data = await readMessageData(
    Readable.from(chunks),
    Buffer.from("Received: x\r\n"),
    holder,
    "normalize",
    observeContent(hash, undefined),
  );
  hash?.digest("hex");
  if (!data.ok) throw new Error("refused");
  const used = process.cpuUsage(started);
  return (used.user + used.system) / 1000;
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

for (const mib of [1, 25]) {
  const chunks = chunksOf(mib);
  const plain: number[] = [];
  const fingerprinted: number[] = [];
  for (let i = 0; i < 45; i++) {
    const a = await readMs(chunks, false);
    const b = await readMs(chunks, true);
    // The first runs warm the JIT and the allocator.
    if (i < 5) continue;
    plain.push(a);
    fingerprinted.push(b);
  }
  const cost = (median(fingerprinted) - median(plain)) / mib;
  console.log(
    `${mib} MiB: read ${median(plain).toFixed(2)} ms, read and fingerprint ${median(fingerprinted).toFixed(2)} ms: ${cost.toFixed(2)} ms per MiB`,
  );
}
