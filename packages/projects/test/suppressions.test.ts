import { sqlPoolOf } from "@postern/db";
import { createProjectFixture, createTestContext, type TestContext } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createSuppressionService,
  pruneExpiredSuppressions,
  SuppressionBook,
  suppressRecipient,
} from "../src";

/** The suppressions' store, RCPT's cache of them and the sweeper's pruning, against real PostgreSQL. */

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(async () => {
  await ctx?.close();
});

const serviceDeps = () => ({ db: ctx.db, redis: ctx.redis, config: ctx.config });

async function versionOf(projectId: string) {
  return (await ctx.db.project.findUniqueOrThrow({ where: { id: projectId } })).suppressionsVersion;
}

describe("SuppressionBook", () => {
  it("does not look up a project at version 0, and reads again only at a new version", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    // A row written by hand, the version left at 0: a project at version 0 is never looked up.
    await ctx.db.suppression.create({
      data: { projectId: project.id, address: "hand@example.net", reason: "manual" },
    });
    const book = new SuppressionBook(ctx.db);
    expect(await book.verdictFor(project.id, 0, "hand@example.net")).toBeNull();

    expect(await suppressRecipient(serviceDeps(), project.id, "Dead@Example.net", "hard_bounce", null)).toBe(
      true,
    );
    const version = await versionOf(project.id);
    expect(version).toBe(1);
    expect(await book.verdictFor(project.id, version, "DEAD@example.net")).toEqual({
      address: "dead@example.net",
      reason: "hard_bounce",
    });
    expect(await book.verdictFor(project.id, version, "alive@example.net")).toBeNull();

    // Within a version the answers are remembered; the next version reads again.
    await createSuppressionService(serviceDeps()).add(
      project.id,
      [{ address: "alive@example.net", reason: "unsubscribe" }],
      { actor: "test" },
    );
    expect(await book.verdictFor(project.id, version, "alive@example.net")).toBeNull();
    expect(await book.verdictFor(project.id, await versionOf(project.id), "alive@example.net")).toEqual({
      address: "alive@example.net",
      reason: "unsubscribe",
    });
    const audit = await ctx.db.auditEvent.findFirst({
      where: { projectId: project.id, action: "suppression.added", actor: "system" },
    });
    expect(audit?.details).toMatchObject({
      added: 1,
      addresses: ["dead@example.net"],
      reasons: ["hard_bounce"],
    });
  });

  it("prefers the address's own entry to its domain's, and ignores expired entries", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const service = createSuppressionService(serviceDeps());
    await service.add(
      project.id,
      [
        { address: "*@example.org", reason: "manual" },
        { address: "own@example.org", reason: "complaint" },
        { address: "old@example.com", reason: "hard_bounce", expiresAt: new Date(Date.now() - 1000) },
      ],
      { actor: "test" },
    );
    const book = new SuppressionBook(ctx.db);
    const version = await versionOf(project.id);
    expect(await book.verdictFor(project.id, version, "own@example.org")).toEqual({
      address: "own@example.org",
      reason: "complaint",
    });
    expect(await book.verdictFor(project.id, version, "any@EXAMPLE.org")).toEqual({
      address: "*@example.org",
      reason: "manual",
    });
    expect(await book.verdictFor(project.id, version, "x@sub.example.org")).toBeNull();
    expect(await book.verdictFor(project.id, version, "old@example.com")).toBeNull();
  });
});

describe("pruneExpiredSuppressions", () => {
  it("deletes the expired entries in batches, and only those", async () => {
    const { project } = await createProjectFixture(ctx.db, ctx.config);
    const past = new Date(Date.now() - 60_000);
    await ctx.db.suppression.createMany({
      data: [
        ...Array.from({ length: 7 }, (_, i) => ({
          projectId: project.id,
          address: `expired${i}@example.net`,
          reason: "manual" as const,
          expiresAt: past,
        })),
        { projectId: project.id, address: "kept@example.net", reason: "manual" as const },
        {
          projectId: project.id,
          address: "later@example.net",
          reason: "manual" as const,
          expiresAt: new Date(Date.now() + 86_400_000),
        },
      ],
    });
    expect(await pruneExpiredSuppressions(sqlPoolOf(ctx.db), new Date(), 3)).toBeGreaterThanOrEqual(7);
    const left = await ctx.db.suppression.findMany({
      where: { projectId: project.id },
      orderBy: { address: "asc" },
    });
    expect(left.map((s) => s.address)).toEqual(["kept@example.net", "later@example.net"]);
  });
});
