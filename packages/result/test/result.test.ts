import { ok, type Result, refuse } from "@postern/result";
import { expect, it } from "vitest";

it("is { ok: true, value } or { ok: false, reason } with the refusal's details", () => {
  const parse = (text: string): Result<number, "not_a_number", { message: string }> => {
    const value = Number(text);
    return Number.isNaN(value) ? refuse("not_a_number", { message: `${text} is not a number` }) : ok(value);
  };
  expect(parse("42")).toEqual({ ok: true, value: 42 });
  expect(parse("x")).toEqual({ ok: false, reason: "not_a_number", message: "x is not a number" });
  // Details cannot overwrite what makes it a refusal.
  expect(refuse("locked", { ok: true, reason: "other" } as object)).toMatchObject({
    ok: false,
    reason: "locked",
  });
});
