/**
 * `npx tsx bench/rules-cost.ts`: what content rules cost per message and per MiB, measured alone
 * (no SMTP, no store): bench/rules.ts's twenty rules compiled once, then each message written in
 * 64 KiB chunks (as TLS hands them over, roughly) to packages/rules' MIME reader and judged.
 * Envelope rules cost next to nothing and are left out of the figure. docs/benchmarks.md quotes it.
 */
import { compileRules, inspectContent, rulesSchema } from "@postern/rules";
import { messageBody, messageHead } from "./protocol";
import { benchRules } from "./rules";

const rules = compileRules({ version: 1, rules: rulesSchema.parse(benchRules) });
const envelope = { from: "bench@bench.example", to: "sink@bench.example" };

/** A multipart/mixed message of `parts` base64 attachments of `partBytes` each. */
function multipart(parts: number, partBytes: number): Buffer {
  const body = messageBody(partBytes);
  const head = Buffer.from(
    `From: <${envelope.from}>\r\nTo: <${envelope.to}>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n` +
      'Content-Type: multipart/mixed; boundary="b"\r\n\r\n',
  );
  const part = (i: number) =>
    Buffer.from(
      `--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="part-${i}.bin"\r\n` +
        "Content-Transfer-Encoding: base64\r\n\r\n",
    );
  return Buffer.concat([
    head,
    ...Array.from({ length: parts }, (_, i) => [part(i), body]).flat(),
    Buffer.from("--b--\r\n"),
  ]);
}

async function judge(message: Buffer): Promise<void> {
  const inspector = inspectContent(rules);
  for (let at = 0; at < message.length; at += 64 * 1024)
    await inspector.write(message.subarray(at, at + 64 * 1024));
  const reading = await inspector.finish();
  if (!reading.ok) throw reading.error;
  rules.judgeMessage(envelope.from, [envelope.to], reading.facts);
}

async function measure(name: string, message: Buffer, rounds: number) {
  for (let i = 0; i < rounds; i++) await judge(message); // warm-up: as many rounds as measured
  const startedAt = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) await judge(message);
  const ms = Number(process.hrtime.bigint() - startedAt) / 1e6 / rounds;
  const mib = message.length / 2 ** 20;
  process.stdout.write(
    `${name.padEnd(28)} ${(message.length / 1024).toFixed(0).padStart(7)} KiB  ${ms.toFixed(3).padStart(9)} ms/message  ${(ms / mib).toFixed(1).padStart(6)} ms/MiB\n`,
  );
}

const tenKiB = Buffer.concat([messageHead(envelope, Date.now(), 1), messageBody(10 * 1024)]);
await measure("10 KiB text (the bench's)", tenKiB, 5000);
await measure("1 MiB text", Buffer.concat([messageHead(envelope, Date.now(), 1), messageBody(2 ** 20)]), 40);
await measure("25 MB, 1,000 parts", multipart(1000, 25_000), 3);
