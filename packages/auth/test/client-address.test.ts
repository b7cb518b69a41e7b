import { auditableUsername, clientAddress } from "@postern/auth";
import { describe, expect, it } from "vitest";

describe("clientAddress: what an AUTH limit counts", () => {
  it("keeps IPv4 as is and reads IPv4-mapped IPv6 as IPv4", () => {
    expect(clientAddress("192.0.2.7")).toBe("192.0.2.7");
    expect(clientAddress("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(clientAddress("::FFFF:c000:0207")).toBe("192.0.2.7");
  });

  it("counts IPv6 by its /64, however the address is written", () => {
    expect(clientAddress("2001:db8:1:2::1")).toBe("2001:db8:1:2::/64");
    expect(clientAddress("2001:0DB8:0001:0002:ffff:eeee:dddd:cccc")).toBe("2001:db8:1:2::/64");
    expect(clientAddress("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
    expect(clientAddress("::1")).toBe("::/64");
    expect(clientAddress("fe80::1%eth0")).toBe("fe80::/64");
  });

  it("counts text that is not an address as that text", () => {
    expect(clientAddress("unknown")).toBe("unknown");
  });
});

describe("auditableUsername", () => {
  it("keeps a username only when it has exactly the shape of an API key", () => {
    const key = `pst_smtp_${"A".repeat(31)}_`;
    expect(auditableUsername(key)).toBe(key);
    expect(auditableUsername(` ${key}`)).toBe("[not an API key, 42 characters]");
    expect(auditableUsername(`${key}x`)).toBe("[not an API key, 42 characters]");
    expect(auditableUsername(key.toUpperCase())).toBe("[not an API key, 41 characters]");
    expect(auditableUsername("pst_secret_abc")).toBe("[not an API key, 14 characters]");
    expect(auditableUsername("")).toBe("[not an API key, 0 characters]");
  });
});
