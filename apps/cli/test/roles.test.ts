import { describe, expect, it } from "vitest";
import { defaultRoles, roleNames } from "../src/roles";

describe("the roles `postern start` runs without naming any (as `npm start`)", () => {
  it("are all of them, the inbound role only when BOUNCE_DOMAIN is set", () => {
    expect(roleNames).toEqual(["api", "worker", "smtp", "inbound"]);
    expect(defaultRoles({ bounces: { domain: undefined } })).toEqual(["api", "worker", "smtp"]);
    expect(defaultRoles({ bounces: { domain: "bounces.example.com" } })).toEqual([
      "api",
      "worker",
      "smtp",
      "inbound",
    ]);
  });
});
