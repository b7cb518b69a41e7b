import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * packages/messages is the only code that touches the message tables: SQL naming one of them, or
 * a Prisma delegate of one, anywhere else in apps/ or packages/ fails this test. Tests and the
 * testkit (fixtures that build rows for tests) are not product code and are not scanned; nor is
 * Prisma's generated client.
 */
const root = fileURLToPath(new URL("../../..", import.meta.url));
const tables = [
  "Message",
  "MessageBody",
  "MessageRecipient",
  "DeliveryAttempt",
  "MessageEvent",
  "MessageFingerprint",
];
const delegates = [
  "message",
  "messageBody",
  "messageRecipient",
  "deliveryAttempt",
  "messageEvent",
  "messageFingerprint",
];
const prismaMethods = [
  "findMany",
  "findFirst",
  "findFirstOrThrow",
  "findUnique",
  "findUniqueOrThrow",
  "create",
  "createMany",
  "createManyAndReturn",
  "update",
  "updateMany",
  "updateManyAndReturn",
  "upsert",
  "delete",
  "deleteMany",
  "count",
  "aggregate",
  "groupBy",
];
const sqlOnTables = new RegExp(`"(${tables.join("|")})"`);
const prismaOnTables = new RegExp(
  `\\.(${delegates.join("|")})\\s*\\.\\s*(${prismaMethods.join("|")})\\s*\\(`,
);
// Build output (the dashboard's bundle in apps/dashboard/dist) is not source: its strings are the pages'.
const notScanned = [/^packages\/messages\//, /^packages\/testkit\//, /\/test\//, /\/generated\//, /\/dist\//];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" ? [] : sourceFiles(path);
    return /\.(ts|js|mjs)$/.test(entry.name) ? [path] : [];
  });
}

/** `file:line: text` for every line that reaches a message table. */
function statementsOnMessageTables(file: string, text: string): string[] {
  return text
    .split("\n")
    .flatMap((line, i) =>
      sqlOnTables.test(line) || prismaOnTables.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : [],
    );
}

describe("packages/messages owns the message tables", () => {
  it("no statement on Message, MessageBody, MessageRecipient, DeliveryAttempt or MessageEvent outside it", () => {
    const files = ["apps", "packages"]
      .flatMap((dir) => sourceFiles(join(root, dir)))
      .map((path) => relative(root, path))
      .filter((path) => !notScanned.some((pattern) => pattern.test(path)));
    expect(files.length).toBeGreaterThan(50);
    const found = files.flatMap((file) =>
      statementsOnMessageTables(file, readFileSync(join(root, file), "utf8")),
    );
    expect(found).toEqual([]);
  });

  it("recognises SQL and Prisma calls on those tables, and not other uses of the words", () => {
    const samples = [
      `await sql.query('UPDATE "Message" SET "status" = $1')`,
      'db.$queryRaw`SELECT 1 FROM "DeliveryAttempt"`',
      `INSERT INTO "MessageEvent" ("type") VALUES ('x')`,
      "await tx.message.updateMany({ where: {} })",
      "await deps.db.messageRecipient.findMany()",
    ];
    for (const sample of samples) expect(statementsOnMessageTables("x.ts", sample)).toHaveLength(1);
    expect(statementsOnMessageTables("x.ts", `log.warn({ err }, error.message.split("\\n"))`)).toEqual([]);
  });
});
