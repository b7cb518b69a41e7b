import { parseReply, verdictOfError, verdictOfReply } from "@postern/relay";
import { describe, expect, it } from "vitest";

describe("classification of upstream answers", () => {
  it.each([
    ["250 2.0.0 Ok: queued as 123", "delivered", 250, "2.0.0"],
    ["251 user not local; will forward", "delivered", 251, null],
    ["421 4.3.2 service shutting down", "deferred", 421, "4.3.2"],
    ["451 4.7.1 greylisted, try later", "deferred", 451, "4.7.1"],
    ["452 4.2.2 mailbox full", "deferred", 452, "4.2.2"],
    ["550 5.1.1 <x@example.net>: user unknown", "failed", 550, "5.1.1"],
    ["554 5.7.1 rejected for policy reasons", "failed", 554, "5.7.1"],
  ])("%s → %s", (reply, outcome, code, enhancedCode) => {
    expect(verdictOfReply(reply)).toEqual({ outcome, code, enhancedCode, response: reply });
  });

  it("keeps replies storable: NUL bytes dropped, very long text cut at 2,000 characters", () => {
    expect(verdictOfReply("550 5.1.1 no\0 such user\0").response).toBe("550 5.1.1 no such user");
    expect(verdictOfError({ code: "ESOCKET", message: "reset\0" }).response).toBe("reset");
    expect(verdictOfReply(`451 4.3.0 ${"x".repeat(5_000)}`).response).toHaveLength(2_000);
  });

  it("parses multi-line replies by their first line", () => {
    expect(parseReply("550-5.7.1 first line\r\n550 5.7.1 second line")).toEqual({
      code: 550,
      enhancedCode: "5.7.1",
    });
  });

  it.each(["ECONNECTION", "ETIMEDOUT", "ESOCKET", "EDNS", "ETLS"])(
    "%s without a reply is deferred",
    (code) => {
      expect(verdictOfError({ code, message: "connect ECONNREFUSED 127.0.0.1:1" })).toMatchObject({
        outcome: "deferred",
        code: null,
        enhancedCode: null,
        response: "connect ECONNREFUSED 127.0.0.1:1",
      });
    },
  );

  it("defers a refused upstream login instead of failing the message", () => {
    expect(
      verdictOfError({
        code: "EAUTH",
        responseCode: 535,
        response: "535 5.7.8 bad credentials",
        message: "Invalid login",
      }),
    ).toMatchObject({ outcome: "deferred", code: 535, enhancedCode: "5.7.8" });
  });

  it("defers a refused STARTTLS when TLS is required", () => {
    expect(
      verdictOfError({
        code: "ETLS",
        responseCode: 502,
        response: "502 5.5.1 not implemented",
        message: "x",
      }),
    ).toMatchObject({ outcome: "deferred", code: 502 });
  });

  it("fails on a 5xx at DATA and defers a 4xx at DATA", () => {
    expect(
      verdictOfError({
        code: "EMESSAGE",
        responseCode: 554,
        response: "554 5.6.0 bad message",
        message: "x",
      }),
    ).toMatchObject({ outcome: "failed", code: 554, enhancedCode: "5.6.0" });
    expect(
      verdictOfError({ code: "EMESSAGE", responseCode: 451, response: "451 4.3.0 later", message: "x" }),
    ).toMatchObject({ outcome: "deferred", code: 451 });
  });
});
