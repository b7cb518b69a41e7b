/**
 * The one shape of an outcome that may be refused: `{ ok: true, value }` or `{ ok: false, reason }`
 * (with what the caller needs to answer, e.g. a `message`). A refusal is an expected outcome, a
 * value the caller maps to its answer (an SMTP reply, an API error code, a CLI exit code) in one
 * table; an exception is for what no caller expects, and is an Error subclass with a `name`
 * (`ConfigError`, `MigrationError`, `UpstreamUrlError`): docs/architecture.md, "Errors".
 */
export type Ok<T> = { ok: true; value: T };

export type Refusal<Reason extends string, Details extends object = object> = {
  ok: false;
  reason: Reason;
} & Details;

export type Result<T, Reason extends string, Details extends object = object> =
  | Ok<T>
  | Refusal<Reason, Details>;

export function ok<T>(value: T): Ok<T> {
  return { ok: true, value };
}

export function refuse<Reason extends string, Details extends object = object>(
  reason: Reason,
  details: Details = {} as Details,
): Refusal<Reason, Details> {
  return { ...details, ok: false, reason };
}
