import { Writable } from "node:stream";
import { createLogger } from "@postern/telemetry";
import { describe, expect, it } from "vitest";

describe("logger", () => {
  it("masks values that look like Postern secrets in any field, any case, anywhere in a string", () => {
    let output = "";
    const log = createLogger(
      { level: "debug" },
      new Writable({
        write(chunk, _encoding, done) {
          output += chunk.toString();
          done();
        },
      }),
    );
    const error = new Error("boom");
    log.info(
      {
        key: " pst_secret_AbC-1",
        nested: { note: "key:PST_SECRET_dEf_2", list: ["x pst_api_GhI3"] },
        admin: "Pst_Admin_jKl4",
        hook: "signed with whsec_MnO5+pQ/6=",
        err: error,
        count: 3,
      },
      "attempt",
    );
    for (const part of ["AbC-1", "dEf_2", "GhI3", "jKl4", "MnO5"]) expect(output).not.toContain(part);
    const line = JSON.parse(output);
    expect(line).toMatchObject({
      key: " [redacted]",
      nested: { note: "key:[redacted]", list: ["x [redacted]"] },
      hook: "signed with [redacted]",
      count: 3,
      err: { message: "boom" },
    });
  });
});
