import { createCredentialVerifier, publishAuthInvalidation } from "@postern/auth";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

function verifier(cacheTtlMs = 30_000, limits: Partial<Parameters<typeof createCredentialVerifier>[0]> = {}) {
  return createCredentialVerifier({
    db: ctx.db,
    redis: ctx.redis,
    keyPrefix: ctx.redisKeyPrefix,
    cacheTtlMs,
    failuresPerIp: 100,
    failuresPerKey: 100,
    ...limits,
  });
}

describe("credential verifier", () => {
  it("verifies with bcrypt once, then from the cache; the cache is keyed without the secret", async () => {
    const { project, smtp } = await createProjectFixture(ctx.db, ctx.config, {
      senderDomains: ["Example.COM"],
    });
    const v = verifier();
    const first = await v.verify(smtp.username, smtp.password, "192.0.2.1");
    expect(first).toMatchObject({ ok: true, value: { cached: false } });
    if (!first.ok) throw new Error("expected ok");
    expect(first.value.client.project).toMatchObject({ id: project.id, senderDomains: ["example.com"] });
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.1")).toMatchObject({
      ok: true,
      value: { cached: true },
    });
    // A wrong secret is never answered from the cache.
    expect(await v.verify(smtp.username, `${smtp.password}x`, "192.0.2.1")).toMatchObject({
      ok: false,
      reason: "bad_secret",
    });
    expect(v.cacheSize).toBe(1);
  });

  it("concurrent verifications of one credential share one bcrypt run", async () => {
    const { smtp } = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier();
    const results = await Promise.all(
      Array.from({ length: 5 }, () => v.verify(smtp.username, smtp.password, "192.0.2.2")),
    );
    expect(results.every((r) => r.ok && !r.value.cached)).toBe(true);
    expect(v.cacheSize).toBe(1);
  });

  it("expires cached successes after the TTL, so a revocation written only in the database applies", async () => {
    const { smtp } = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier(200);
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.3")).toMatchObject({ ok: true });
    await ctx.db.smtpCredential.update({ where: { id: smtp.credentialId }, data: { revokedAt: new Date() } });
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.3")).toMatchObject({
      ok: true,
      value: { cached: true },
    });
    await new Promise((r) => setTimeout(r, 250));
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.3")).toMatchObject({
      ok: false,
      reason: "revoked",
    });
  });

  it("drops cached successes on a published invalidation (credential or project)", async () => {
    const a = await createProjectFixture(ctx.db, ctx.config);
    const b = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier();
    const subscriber = ctx.redis.duplicate();
    await v.subscribe(subscriber);
    await v.verify(a.smtp.username, a.smtp.password, "192.0.2.4");
    await v.verify(b.smtp.username, b.smtp.password, "192.0.2.4");
    expect(v.cacheSize).toBe(2);
    await publishAuthInvalidation(ctx.redis, ctx.redisKeyPrefix, {
      kind: "credential",
      credentialId: a.smtp.credentialId,
    });
    await publishAuthInvalidation(ctx.redis, ctx.redisKeyPrefix, {
      kind: "project",
      projectId: b.project.id,
    });
    for (let i = 0; i < 50 && v.cacheSize > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(v.cacheSize).toBe(0);
    subscriber.disconnect();
  });

  it("standing() sees a suspension of an authenticated client's project", async () => {
    const { project, smtp } = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier();
    const outcome = await v.verify(smtp.username, smtp.password, "192.0.2.5");
    if (!outcome.ok) throw new Error("expected ok");
    await ctx.db.project.update({ where: { id: project.id }, data: { status: "suspended" } });
    v.invalidate({ kind: "project", projectId: project.id });
    expect(await v.standing(outcome.value.client)).toEqual({
      ok: false,
      reason: "suspended",
      projectId: project.id,
    });
  });
  it("standing() reads the database once per TTL for all sessions of a credential; an invalidation applies at once", async () => {
    const { smtp } = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier(300);
    const outcome = await v.verify(smtp.username, smtp.password, "192.0.2.6");
    if (!outcome.ok) throw new Error("expected ok");
    await new Promise((r) => setTimeout(r, 350));
    // Expired: concurrent checks share one read, whose answer is remembered for the TTL.
    const checks = await Promise.all(Array.from({ length: 5 }, () => v.standing(outcome.value.client)));
    expect(checks.every((c) => c.ok)).toBe(true);
    await ctx.db.smtpCredential.update({ where: { id: smtp.credentialId }, data: { revokedAt: new Date() } });
    expect(await v.standing(outcome.value.client)).toMatchObject({ ok: true });
    // Published revocations apply at once; one written only in the database within the TTL.
    v.invalidate({ kind: "credential", credentialId: smtp.credentialId });
    expect(await v.standing(outcome.value.client)).toMatchObject({ ok: false, reason: "revoked" });
  });

  it("counts IPv6 clients by /64: two addresses of one /64 share an allowance, the next /64 has its own", async () => {
    const { smtp } = await createProjectFixture(ctx.db, ctx.config);
    const v = verifier(30_000, { failuresPerIp: 3 });
    const unknown = (n: number) => `pst_smtp_unknown_${n}_${Date.now()}`;
    expect(await v.verify(unknown(1), "x", "2001:db8:64:1::1")).toMatchObject({ reason: "unknown_key" });
    expect(await v.verify(unknown(2), "x", "2001:db8:64:1::2")).toMatchObject({ reason: "unknown_key" });
    expect(await v.verify(unknown(3), "x", "2001:db8:64:1:ffff::3")).toMatchObject({
      reason: "blocked",
      scope: "ip",
      address: "2001:db8:64:1::/64",
      reachedNow: true,
    });
    // Any address of that /64, even with the right secret of a key never used from there.
    expect(await v.verify(smtp.username, smtp.password, "2001:db8:64:1:abcd::9")).toMatchObject({
      reason: "blocked",
      scope: "ip",
      reachedNow: false,
    });
    expect(await v.verify(smtp.username, smtp.password, "2001:db8:64:2::1")).toMatchObject({ ok: true });
  });

  it("takes a point before bcrypt and gives it back on success; a cached success passes a blocked address", async () => {
    const { smtp } = await createProjectFixture(ctx.db, ctx.config);
    let compared = 0;
    const v = verifier(30_000, { failuresPerKey: 3, onSecretCompared: () => compared++ });
    // Successes do not count: many in a row never block.
    for (let i = 0; i < 5; i++) {
      v.invalidate({ kind: "credential", credentialId: smtp.credentialId });
      expect(await v.verify(smtp.username, smtp.password, "192.0.2.40")).toMatchObject({
        ok: true,
        value: { cached: false },
      });
    }
    expect(compared).toBe(5);
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, (_, i) => v.verify(smtp.username, `pst_secret_wrong${i}`, "192.0.2.40")),
    );
    expect(compared).toBe(8);
    expect(outcomes.filter((o) => !o.ok && o.reason === "bad_secret")).toHaveLength(2);
    expect(outcomes.filter((o) => !o.ok && o.reason === "blocked" && o.reachedNow)).toHaveLength(1);
    // Cached from before the block: still good from that address.
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.40")).toMatchObject({
      ok: true,
      value: { cached: true },
    });
    v.invalidate({ kind: "credential", credentialId: smtp.credentialId });
    expect(await v.verify(smtp.username, smtp.password, "192.0.2.40")).toMatchObject({
      reason: "blocked",
      scope: "key",
    });
    expect(compared).toBe(8);
  });
});
