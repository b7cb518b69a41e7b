import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProjectService } from "../src";

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(async () => {
  await ctx?.close();
});

describe("ProjectService.list", () => {
  it("reads every project as Prisma does, field for field, newest first", async () => {
    const plain = await createProjectFixture(ctx.db, ctx.config);
    const { project } = await createProjectFixture(ctx.db, ctx.config, {
      upstream: "smtp://user:secret@mx.example.net:587",
      senderDomains: ["example.net", "example.org"],
      status: "suspended",
    });
    // Every kind of column the statement reads: JSON, arrays, enums, a timestamp set by hand.
    await ctx.db.project.update({
      where: { id: project.id },
      data: {
        routes: [{ match: "*@example.org", upstream: "smtp://mx.example.org:25" }],
        localAddresses: ["127.0.0.1"],
        mode: "sandbox",
        holdExpiry: "approve",
        returnPath: "verp",
        requireVerifiedDomain: true,
        createdAt: new Date("2031-02-03T04:05:06.789Z"),
      },
    });
    const service = createProjectService({ db: ctx.db, redis: ctx.redis, config: ctx.config });

    const listed = await service.list();

    expect(listed).toEqual(
      await ctx.db.project.findMany({ orderBy: [{ createdAt: "desc" }, { id: "desc" }] }),
    );
    expect(listed[0]?.id).toBe(project.id);
    expect(listed[0]?.createdAt.toISOString()).toBe("2031-02-03T04:05:06.789Z");
    expect(listed.map((p) => p.id)).toContain(plain.project.id);
  });
});
