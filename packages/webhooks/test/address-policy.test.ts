import { describe, expect, it } from "vitest";
import { allowedAddresses, checkedLookup, refusedRange } from "../src/address-policy";

/** Which addresses a webhook may reach (SSRF): plain unicast only, IPv4 and IPv6. */
describe("refusedRange", () => {
  it("refuses loopback, private, link-local, unspecified and other non-public addresses, v4, v6 and v4-mapped", () => {
    const refused: [string, string][] = [
      ["127.0.0.1", "loopback"],
      ["127.8.9.10", "loopback"],
      ["10.0.0.1", "private"],
      ["172.16.5.4", "private"],
      ["192.168.0.1", "private"],
      ["169.254.169.254", "linkLocal"],
      ["0.0.0.0", "unspecified"],
      ["100.64.0.1", "carrierGradeNat"],
      ["224.0.0.1", "multicast"],
      ["255.255.255.255", "broadcast"],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["fe80::1", "linkLocal"],
      ["fd12:3456::1", "uniqueLocal"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:10.1.2.3", "private"],
      ["::ffff:169.254.1.1", "linkLocal"],
      ["64:ff9b::a00:1", "rfc6052"],
    ];
    for (const [address, range] of refused) expect(refusedRange(address), address).toBe(range);
  });

  it("allows public unicast addresses", () => {
    for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
      expect(refusedRange(address), address).toBeUndefined();
  });
});

describe("allowedAddresses and checkedLookup", () => {
  const resolve = async (host: string) =>
    host === "mixed.example"
      ? [
          { address: "93.184.216.34", family: 4 },
          { address: "10.0.0.7", family: 4 },
        ]
      : [{ address: "93.184.216.34", family: 4 }];

  it("refuses a name when any of its addresses is refused; allows everything with WEBHOOK_ALLOW_PRIVATE", async () => {
    await expect(allowedAddresses("mixed.example", { allowPrivate: false, resolve })).rejects.toThrow(
      "mixed.example resolves to 10.0.0.7, a private address: refused",
    );
    await expect(allowedAddresses("public.example", { allowPrivate: false, resolve })).resolves.toEqual([
      { address: "93.184.216.34", family: 4 },
    ]);
    await expect(allowedAddresses("10.0.0.7", { allowPrivate: true })).resolves.toEqual([
      { address: "10.0.0.7", family: 4 },
    ]);
  });

  it("hands node:net the address it checked, or the refusal", async () => {
    const lookup = checkedLookup({ allowPrivate: false, resolve });
    const answer = (host: string, all: boolean) =>
      new Promise<unknown>((done) =>
        lookup(host, { all }, (error, address, family) => done({ error: error?.message, address, family })),
      );
    expect(await answer("public.example", false)).toEqual({
      error: undefined,
      address: "93.184.216.34",
      family: 4,
    });
    expect(await answer("public.example", true)).toMatchObject({
      address: [{ address: "93.184.216.34", family: 4 }],
    });
    expect(await answer("mixed.example", false)).toMatchObject({ error: expect.stringContaining("private") });
  });
});
