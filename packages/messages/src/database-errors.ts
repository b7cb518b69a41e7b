/**
 * The one reading of a PostgreSQL error for the message store's batches: did PostgreSQL refuse
 * something in the batch itself, which the same rows written alone may not all meet, or is the
 * connection or the server the cause (then every row alone would fail too)?
 *
 * - class 22, data exception: a value a column cannot hold (a NUL byte in a subject or in an
 *   upstream's reply text). The message's own content: writing it alone fails again.
 * - class 23, integrity constraint: a row of the batch broke one (its project deleted meanwhile).
 *   Not the content's fault, and not the neighbours' either.
 * - class 40, transaction rollback: a deadlock or serialization failure with another statement
 *   holding some of the same rows. Rerunning the rows alone resolves it.
 *
 * All three split a batch into single-row statements (`refusedARow`); only class 22 on a
 * single-row statement means the content cannot be stored (`refusedContent`).
 */
export type DatabaseErrorClass = "data" | "constraint" | "conflict" | "unavailable";

export function classifyDatabaseError(error: unknown): DatabaseErrorClass {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return "unavailable";
  if (code.startsWith("22")) return "data";
  if (code.startsWith("23")) return "constraint";
  if (code.startsWith("40")) return "conflict";
  return "unavailable";
}

/** The batch failed for something its rows alone may not meet: rerun each alone. */
export function refusedARow(error: unknown): boolean {
  return classifyDatabaseError(error) !== "unavailable";
}

/** PostgreSQL refused the data itself: written alone, this row would be refused again. */
export function refusedContent(error: unknown): boolean {
  return classifyDatabaseError(error) === "data";
}
