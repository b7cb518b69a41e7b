import { readFile } from "node:fs/promises";
import { createTestContext, type TestContext } from "@postern/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * schema.prisma and prisma/migrations must describe the same database: a model change without its
 * migration (or the reverse) fails here. The migrated database of the test context is compared
 * with the schema: every model a table, every scalar field a column of a compatible type and
 * nullability, every @id/@unique/@@unique/@@index an index over the same columns, partial
 * (`where: raw(...)`) where the schema says so, over the same values.
 */

interface SchemaField {
  name: string;
  type: string;
  optional: boolean;
  list: boolean;
  attributes: string;
}
interface SchemaModel {
  name: string;
  fields: SchemaField[];
  /** index name (as Prisma names them) → its columns and, for a partial index, its predicate */
  indexes: Map<string, IndexShape>;
}

interface IndexShape {
  columns: string[];
  /** The quoted values of a partial index's predicate, sorted; null: the index covers every row. */
  predicateValues: string[] | null;
}

/** `'queued'` and `'deferred'` of `"status" IN ('queued', 'deferred')`, as PostgreSQL or Prisma writes it. */
function quotedValues(predicate: string): string[] {
  return [...predicate.matchAll(/'([^']*)'/g)].map((m) => m[1] as string).sort();
}

const scalarTypes = new Set([
  "String",
  "Int",
  "BigInt",
  "Boolean",
  "DateTime",
  "Json",
  "Bytes",
  "Float",
  "Decimal",
]);

function parseSchema(text: string): { models: SchemaModel[]; enums: Set<string> } {
  const enums = new Set([...text.matchAll(/^enum (\w+) \{/gm)].map((m) => m[1] as string));
  const models: SchemaModel[] = [];
  for (const match of text.matchAll(/^model (\w+) \{([\s\S]*?)^\}/gm)) {
    const name = match[1] as string;
    const body = (match[2] as string).split("\n").map((l) => l.replace(/\/\/.*$/, "").trim());
    const fields: SchemaField[] = [];
    const indexes = new Map<string, IndexShape>();
    const columns = (list: string) => list.split(",").map((c) => c.trim().replace(/\(.*\)$/, ""));
    for (const line of body) {
      const block = line.match(/^@@(index|unique|id)\(\[([^\]]+)\]/);
      if (block) {
        const cols = columns(block[2] as string);
        const suffix = block[1] === "index" ? "idx" : block[1] === "unique" ? "key" : "pkey";
        const where = line.match(/where: raw\("(.*)"\)/);
        indexes.set(block[1] === "id" ? `${name}_pkey` : `${name}_${cols.join("_")}_${suffix}`, {
          columns: cols,
          predicateValues: where ? quotedValues(where[1] as string) : null,
        });
        continue;
      }
      const field = line.match(/^(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)$/);
      if (!field) continue;
      const [, fieldName, type, list, optional, attributes] = field as unknown as string[];
      if (!scalarTypes.has(type as string) && !enums.has(type as string)) continue; // a relation
      if ((attributes as string).includes("@relation")) continue;
      fields.push({
        name: fieldName as string,
        type: type as string,
        optional: !!optional,
        list: !!list,
        attributes: attributes as string,
      });
      const whole = { columns: [fieldName as string], predicateValues: null };
      if ((attributes as string).includes("@id")) indexes.set(`${name}_pkey`, whole);
      if (/@unique\b/.test(attributes as string)) indexes.set(`${name}_${fieldName}_key`, whole);
    }
    models.push({ name, fields, indexes });
  }
  return { models, enums };
}

function expectedUdt(field: SchemaField, enums: Set<string>): string {
  if (enums.has(field.type)) return field.list ? `_${field.type}` : field.type;
  const base =
    field.type === "String" && field.attributes.includes("@db.Uuid")
      ? "uuid"
      : (
          {
            String: "text",
            Int: "int4",
            BigInt: "int8",
            Boolean: "bool",
            DateTime: "timestamp",
            Json: "jsonb",
            Bytes: "bytea",
            Float: "float8",
            Decimal: "numeric",
          } as Record<string, string>
        )[field.type];
  return field.list ? `_${base}` : (base as string);
}

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.close());

describe("schema.prisma and prisma/migrations", async () => {
  const schemaText = await readFile(new URL("../../../prisma/schema.prisma", import.meta.url), "utf8");
  const { models, enums } = parseSchema(schemaText);

  it("the parser sees every model of the generated client", async () => {
    const { Prisma } = await import("@postern/db");
    expect(models.map((m) => m.name).sort()).toEqual(Object.values(Prisma.ModelName).sort());
  });

  it.each(models.map((m) => [m.name, m] as const))("%s: columns match the schema", async (_name, model) => {
    const client = new pg.Client({ connectionString: ctx.databaseUrl });
    await client.connect();
    const { rows } = await client.query<{ column_name: string; udt_name: string; is_nullable: string }>(
      `SELECT column_name, udt_name, is_nullable FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1`,
      [model.name],
    );
    await client.end();
    const actual = Object.fromEntries(
      rows.map((r) => [r.column_name, { type: r.udt_name, nullable: r.is_nullable === "YES" }]),
    );
    const expected = Object.fromEntries(
      model.fields.map((f) => [
        f.name,
        // Prisma creates scalar-list columns nullable even when the field is required.
        { type: expectedUdt(f, enums), nullable: f.optional || f.list },
      ]),
    );
    expect(actual).toEqual(expected);
  });

  it.each(models.map((m) => [m.name, m] as const))("%s: indexes match the schema", async (_name, model) => {
    const client = new pg.Client({ connectionString: ctx.databaseUrl });
    await client.connect();
    const { rows } = await client.query<{ indexname: string; indexdef: string }>(
      `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1`,
      [model.name],
    );
    await client.end();
    const actual = Object.fromEntries(
      rows.map((r) => {
        const [definition, predicate] = r.indexdef.split(" WHERE ") as [string, string | undefined];
        const columns = (definition.match(/\((.*)\)$/)?.[1] ?? "").split(",").map((c) =>
          c
            .trim()
            .replace(/"/g, "")
            .replace(/ (DESC|ASC)$/, ""),
        );
        const shape: IndexShape = {
          columns,
          predicateValues: predicate === undefined ? null : quotedValues(predicate),
        };
        return [r.indexname, shape];
      }),
    );
    expect(actual).toEqual(Object.fromEntries(model.indexes));
  });
});
