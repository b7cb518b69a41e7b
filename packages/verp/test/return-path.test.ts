import { randomBytes, randomUUID } from "node:crypto";
import { createReturnPaths, verpLocalPrefix } from "@postern/verp";
import { describe, expect, it } from "vitest";

const encryptionKey = randomBytes(32);
const paths = createReturnPaths({ encryptionKey, bounceDomain: "Bounces.Example.com" });

describe("VERP return paths", () => {
  it("names the message in a local part of at most 64 octets, and reads it back in any case", () => {
    for (let i = 0; i < 50; i++) {
      const messageId = randomUUID();
      const address = paths.addressFor(messageId);
      const [local, domain] = address.split("@") as [string, string];
      expect(domain).toBe("bounces.example.com");
      expect(local.startsWith(verpLocalPrefix)).toBe(true);
      expect(local).toMatch(/^bounce\+[a-z2-7]{45}$/);
      expect(Buffer.byteLength(local)).toBeLessThanOrEqual(64);
      expect(paths.read(address)).toEqual({ ok: true, messageId });
      expect(paths.read(address.toUpperCase())).toEqual({ ok: true, messageId });
    }
  });

  it("refuses a token whose MAC does not check: another key's, one character changed, or another message's id", () => {
    const messageId = randomUUID();
    const address = paths.addressFor(messageId);
    const otherKey = createReturnPaths({
      encryptionKey: randomBytes(32),
      bounceDomain: "bounces.example.com",
    });
    expect(paths.read(otherKey.addressFor(messageId))).toEqual({ ok: false, reason: "forged" });
    const at = address.indexOf("@");
    const flipped = `${address.slice(0, at - 1)}${address[at - 1] === "a" ? "b" : "a"}${address.slice(at)}`;
    expect(paths.read(flipped)).toEqual({ ok: false, reason: "forged" });
    // The id of another message with this message's MAC.
    const other = paths.addressFor(randomUUID());
    const spliced = `${other.slice(0, verpLocalPrefix.length + 26)}${address.slice(verpLocalPrefix.length + 26)}`;
    expect(paths.read(spliced)).toEqual({ ok: false, reason: "forged" });
    expect(paths.read("bounce+short@bounces.example.com")).toEqual({ ok: false, reason: "forged" });
    expect(paths.read(`bounce+${"1".repeat(45)}@bounces.example.com`)).toEqual({
      ok: false,
      reason: "forged",
    });
  });

  it("tells other addresses of the domain and other domains apart", () => {
    expect(paths.read("postmaster@bounces.example.com")).toEqual({ ok: false, reason: "not_verp" });
    expect(paths.read(paths.addressFor(randomUUID()).replace("bounces.example.com", "example.com"))).toEqual({
      ok: false,
      reason: "other_domain",
    });
    expect(paths.read("no-at-sign")).toEqual({ ok: false, reason: "other_domain" });
  });
});
