import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createDataBudget } from "../src/data-budget";
import { type BareNewlinePolicy, readMessageData } from "../src/message";

/**
 * The line-ending rules of DATA (docs/smtp.md, Bare line endings) must not depend on where TCP
 * cut the stream: every case is read whole and cut at every place into two and three chunks.
 * The input is what smtp-server hands over: dot-stuffing removed, the final `.` line gone.
 */

async function read(chunks: string[], policy: BareNewlinePolicy) {
  const stream = Readable.from(chunks.map((c) => Buffer.from(c, "latin1")));
  const data = await readMessageData(stream, Buffer.from("P:"), createDataBudget(1 << 20).holder(), policy);
  return data.ok ? data.bytes.toString("latin1").slice(2) : data.reason;
}

function cuts(text: string): string[][] {
  const all: string[][] = [[text]];
  for (let i = 0; i <= text.length; i++) {
    all.push([text.slice(0, i), text.slice(i)]);
    for (let j = i; j <= text.length; j++) all.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return all;
}

const cases: { sent: string; normalize: string; reject: string }[] = [
  { sent: "a\r\nb\r\n", normalize: "a\r\nb\r\n", reject: "a\r\nb\r\n" },
  { sent: "a\nb\r\n", normalize: "a\r\nb\r\n", reject: "bare_lf" },
  { sent: "\n\nx\n\r\n", normalize: "\r\n\r\nx\r\n\r\n", reject: "bare_lf" },
  // A line of one dot between CRLFs was sent dot-stuffed: content.
  { sent: "a\r\n.\r\nb\r\n", normalize: "a\r\n.\r\nb\r\n", reject: "a\r\n.\r\nb\r\n" },
  { sent: ".\r\nb\r\n", normalize: ".\r\nb\r\n", reject: ".\r\nb\r\n" },
  { sent: "a\n.x\n..\r\n", normalize: "a\r\n.x\r\n..\r\n", reject: "bare_lf" },
  // End-of-DATA look-alikes and bare CRs: refused under either policy.
  ...["a\n.\nb\r\n", "a\n.\r\nb\r\n", "a\r\n.\nb\r\n", ".\nb\r\n", "a\r.\r\n", "a\rb\r\n", "a\r\n\r"].map(
    (sent) => ({ sent, normalize: "bare_lf", reject: "bare_lf" }),
  ),
];

describe("DATA line endings, wherever the stream is cut", () => {
  for (const { sent, normalize, reject } of cases) {
    it(JSON.stringify(sent), async () => {
      for (const chunks of cuts(sent)) {
        expect(await read(chunks, "normalize"), JSON.stringify(chunks)).toBe(normalize);
        expect(await read(chunks, "reject"), JSON.stringify(chunks)).toBe(reject);
      }
    });
  }
});
