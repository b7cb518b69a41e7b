import { createHash } from "node:crypto";
import { startFingerprint } from "@postern/messages";
import { describe, expect, it } from "vitest";

const digest = (envelope: { mailFrom: string; recipients: string[] }, content: string) =>
  startFingerprint(envelope, "message").update(content).digest("hex");

describe("startFingerprint", () => {
  it("is the SHA-256 of the envelope as an SMTP transaction states it, then the content", () => {
    const expected = createHash("sha256")
      .update(
        "MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nbody",
      )
      .digest("hex");
    expect(
      digest({ mailFrom: "App@Example.com", recipients: ["b@example.net", "A@example.net"] }, "body"),
    ).toBe(expected);
  });

  it("tells apart what a resend would not change from what it would", () => {
    const envelope = { mailFrom: "app@example.com", recipients: ["a@example.net"] };
    const base = digest(envelope, "body");
    expect(digest({ ...envelope, recipients: ["a@example.net", "A@EXAMPLE.NET"] }, "body")).toBe(base);
    expect(digest({ ...envelope, mailFrom: "" }, "body")).not.toBe(base);
    expect(digest({ ...envelope, recipients: ["a@example.net", "b@example.net"] }, "body")).not.toBe(base);
    expect(digest(envelope, "body ")).not.toBe(base);
    // A JSON request never matches message bytes, even the same text.
    expect(startFingerprint(envelope, "json").update("body").digest("hex")).not.toBe(base);
  });
});
