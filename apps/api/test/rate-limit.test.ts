import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFor, bearer } from "./api-helpers";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ API_RATE_LIMIT: "3" });
});
afterAll(() => ctx.close());

describe("/v1 rate limit", () => {
  it("answers 429 with Retry-After past API_RATE_LIMIT per token, and counts each token apart", async () => {
    const app = await apiFor(ctx);
    const a = await createProjectFixture(ctx.db, ctx.config);
    const b = await createProjectFixture(ctx.db, ctx.config);
    const call = (token: string) =>
      app.inject({ method: "GET", url: "/v1/audit-logs", headers: bearer(token) });
    for (let i = 0; i < 3; i++) expect((await call(a.apiToken.token)).statusCode).toBe(200);
    const limited = await call(a.apiToken.token);
    expect(limited.statusCode).toBe(429);
    expect(limited.json().error.code).toBe("rate_limited");
    const retryAfter = Number(limited.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect((await call(b.apiToken.token)).statusCode).toBe(200);
    await app.close();
  });
});
