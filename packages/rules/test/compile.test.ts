import { describe, expect, it } from "vitest";
import { type ContentFacts, compileRules } from "../src/compile";
import { type Rule, ruleSetInputSchema, rulesSchema } from "../src/schema";

const facts = (partial: Partial<ContentFacts> = {}): ContentFacts => ({
  size: 100,
  headerFrom: [],
  headers: new Map(),
  attachmentExtensions: new Set(),
  ...partial,
});

const compile = (rules: Rule[]) => compileRules({ version: 1, rules: rulesSchema.parse(rules) });

describe("compileRules", () => {
  it("first matching rule wins; no match allows", () => {
    const rules = compile([
      { name: "vip", match: { to: "ceo@example.com" }, action: "allow" },
      { name: "no-example", match: { to: "*@example.com" }, action: "deny" },
      { name: "review", match: { from: "new@*" }, action: "hold" },
    ]);
    expect(rules.judgeRecipient("a@app.test", "ceo@example.com")).toEqual({ action: "allow", rule: "vip" });
    expect(rules.judgeRecipient("a@app.test", "x@example.com")).toEqual({
      action: "deny",
      rule: "no-example",
    });
    expect(rules.judgeRecipient("new@app.test", "x@example.org")).toEqual({ action: "hold", rule: "review" });
    expect(rules.judgeRecipient("a@app.test", "x@example.org")).toEqual({ action: "allow" });
    expect(rules.needsContent).toBe(false);
  });

  it("a content rule ahead of an envelope rule leaves the recipient to the judgement after DATA", () => {
    const rules = compile([
      { name: "invoices-ok", match: { subject: "invoice" }, action: "allow" },
      { name: "no-example", match: { to: "*@example.com" }, action: "deny" },
    ]);
    expect(rules.needsContent).toBe(true);
    expect(rules.judgeRecipient("a@app.test", "x@example.com")).toBe("after_data");
    const invoice = facts({ headers: new Map([["subject", ["Your INVOICE 42"]]]) });
    // The allow rule comes first: the deny after it never applies to an invoice.
    expect(rules.judgeMessage("a@app.test", ["x@example.com"], invoice).action).toBe("allow");
    expect(rules.judgeMessage("a@app.test", ["y@example.org", "x@example.com"], facts())).toEqual({
      action: "deny",
      rule: "no-example",
    });
  });

  it("after DATA: deny for one recipient refuses the message; hold for one holds it", () => {
    const rules = compile([
      { name: "big-to-partner", match: { to: "*@partner.test", sizeOver: 1000 }, action: "deny" },
      { name: "review-new", match: { to: "*@new.test", headerFrom: "*@app.test" }, action: "hold" },
    ]);
    const big = facts({ size: 5000, headerFrom: ["news@app.test"] });
    expect(rules.judgeMessage("a@app.test", ["a@new.test", "b@partner.test"], big)).toEqual({
      action: "deny",
      rule: "big-to-partner",
    });
    expect(rules.judgeMessage("a@app.test", ["a@other.test", "b@new.test"], big)).toEqual({
      action: "hold",
      rule: "review-new",
    });
    expect(rules.judgeMessage("a@app.test", ["b@partner.test"], facts({ size: 1000 }))).toEqual({
      action: "allow",
    });
  });

  it("header and attachment conditions", () => {
    const rules = compile([
      { name: "exe", match: { attachmentExtensions: ["EXE", ".scr"] }, action: "deny" },
      { name: "bulk", match: { header: { name: "Precedence", contains: "bulk" } }, action: "hold" },
    ]);
    expect(rules.headerNames).toEqual(new Set(["precedence"]));
    expect(rules.judgeMessage("", ["a@b.test"], facts({ attachmentExtensions: new Set([".exe"]) }))).toEqual({
      action: "deny",
      rule: "exe",
    });
    expect(
      rules.judgeMessage("", ["a@b.test"], facts({ headers: new Map([["precedence", ["Bulk"]]]) })),
    ).toEqual({ action: "hold", rule: "bulk" });
    expect(rules.judgeMessage("", ["a@b.test"], facts())).toEqual({ action: "allow" });
  });
});

describe("ruleSetInputSchema", () => {
  it("names the field of the first problem", () => {
    const result = ruleSetInputSchema.safeParse({
      version: 0,
      rules: [
        { name: "ok", match: {}, action: "allow" },
        { name: "bad", match: { to: "a b@example.com" }, action: "deny" },
      ],
    });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(["rules", 1, "match", "to"]);
  });

  it("refuses duplicate names, unknown conditions and actions", () => {
    const rule = { name: "a", match: { to: "*" }, action: "deny" };
    expect(ruleSetInputSchema.safeParse({ version: 0, rules: [rule, rule] }).error?.issues[0]?.path).toEqual([
      "rules",
      1,
      "name",
    ]);
    expect(
      ruleSetInputSchema.safeParse({ version: 0, rules: [{ ...rule, match: { regex: ".*" } }] }).success,
    ).toBe(false);
    expect(ruleSetInputSchema.safeParse({ version: 0, rules: [{ ...rule, action: "drop" }] }).success).toBe(
      false,
    );
  });
});
