import { parseUpstreamUrl } from "@postern/relay";
import { describe, expect, it } from "vitest";

describe("upstream URLs: TLS level and certificate verification", () => {
  it.each([
    ["smtp://h", "opportunistic", false, "smtp://h"],
    ["smtp://u:pw@h:587?tls=required", "required", true, "smtp://u@h:587?tls=required"],
    ["smtp://h?tls=required&verify=false", "required", false, "smtp://h?tls=required&verify=false"],
    ["smtp://h?verify=true&tls=required", "required", true, "smtp://h?tls=required"],
    ["smtps://h", "required", true, "smtps://h"],
    ["smtps://h?verify=false", "required", false, "smtps://h?verify=false"],
    ["smtp://u:pw@h?tls=none", "none", false, "smtp://u@h?tls=none"],
  ])("%s → tls %s, verify %s, shown as %s", (input, tls, verify, shown) => {
    const parsed = parseUpstreamUrl(input);
    expect(parsed.upstream).toMatchObject({ tls, verifyCertificate: verify });
    expect(parsed.publicUrl).toBe(shown);
  });

  it.each([
    ["smtp://h?tls=maybe", "tls parameter can only be 'required' or 'none'"],
    ["smtp://h?verify=false", "verify applies only to smtps:// and tls=required"],
    ["smtp://h?tls=none&verify=false", "verify applies only to smtps:// and tls=required"],
    ["smtps://h?tls=none", "smtps:// is TLS throughout: tls=none contradicts it"],
    ["smtps://h?verify=no", "verify parameter can only be 'true' or 'false'"],
    ["smtp://h?port=1", "unknown parameter 'port' (only tls and verify)"],
  ])("refuses %s: %s", (input, message) => {
    expect(() => parseUpstreamUrl(input)).toThrow(message);
  });
});
