import { describe, expect, it } from "vitest";
import { compileRules } from "../src/compile";
import { extensionOf, inspectContent, maxMimeParts } from "../src/content";
import { rulesSchema } from "../src/schema";

const rules = compileRules({
  version: 1,
  rules: rulesSchema.parse([
    { name: "exe", match: { attachmentExtensions: [".exe"] }, action: "deny" },
    { name: "subject", match: { subject: "x" }, action: "hold" },
  ]),
});

/** The message written in pieces of `size` bytes. */
async function read(message: string | Buffer, size = 7) {
  const bytes = Buffer.from(message);
  const inspector = inspectContent(rules);
  for (let at = 0; at < bytes.length; at += size) await inspector.write(bytes.subarray(at, at + size));
  return inspector.finish();
}

describe("inspectContent", () => {
  it("finds the header's end wherever the chunks cut it", async () => {
    const message = "Subject: Hello\r\nFrom: A <a@app.test>\r\n\r\nbody\r\n";
    for (const size of [1, 2, 3, 5, 16, 1000]) {
      const reading = await read(message, size);
      expect(reading.ok && reading.facts.headers.get("subject")).toEqual(["Hello"]);
      expect(reading.ok && reading.facts.headerFrom).toEqual(["a@app.test"]);
      expect(reading.ok && reading.facts.size).toBe(message.length);
    }
  });

  it("reads a message that is all header, and one without a header", async () => {
    const allHeader = await read("Subject: only\r\nX-A: b");
    expect(allHeader.ok && allHeader.facts.headers.get("subject")).toEqual(["only"]);
    const noHeader = await read("\r\nSubject: in the body\r\n");
    expect(noHeader.ok && noHeader.facts.headers.get("subject")).toEqual([]);
  });

  it("finds attachments in a forwarded message (message/rfc822, not itself an attachment) and on a single-part message", async () => {
    const forwarded = [
      'Content-Type: multipart/mixed; boundary="a"',
      "",
      "--a",
      "Content-Type: message/rfc822",
      "",
      'Content-Type: multipart/mixed; boundary="inner"',
      "",
      "--inner",
      'Content-Type: application/octet-stream; name="Setup.EXE"',
      "",
      "MZ",
      "--inner--",
      "--a--",
      "",
    ].join("\r\n");
    const reading = await read(forwarded, 11);
    expect(reading.ok && [...reading.facts.attachmentExtensions]).toEqual([".exe"]);
    const single = await read('Content-Disposition: attachment; filename="run.exe. "\r\n\r\nMZ');
    expect(single.ok && [...single.facts.attachmentExtensions]).toEqual([".exe"]);
  });

  it("refuses to judge more parts than it reads, or a header over 1 MiB", async () => {
    const parts = Array.from({ length: maxMimeParts + 1 }, () => "--b\r\n\r\nx\r\n").join("");
    const tooMany = await read(
      `Content-Type: multipart/mixed; boundary=b\r\n\r\n${parts}--b--\r\n`,
      64 * 1024,
    );
    expect(tooMany.ok).toBe(false);
    const hugeHeader = await read(`X-Big: ${"a".repeat(2 * 1024 * 1024)}`, 64 * 1024);
    expect(hugeHeader.ok).toBe(false);
  });

  it("extensionOf", () => {
    expect(extensionOf("a.tar.GZ")).toBe(".gz");
    expect(extensionOf("invoice.exe. ")).toBe(".exe");
    expect(extensionOf("README")).toBeUndefined();
  });
});
