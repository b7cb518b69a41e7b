import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import type { Resource } from "./hooks";

/** Loading, error and empty states, the same on every page. */
export function Loading() {
  return (
    <p class="state" role="status">
      Loading…
    </p>
  );
}

export function ErrorNote({ error }: { error: Error }) {
  const code = (error as { code?: string }).code;
  return (
    <p class="state error" role="alert">
      {error.message}
      {code ? <span class="code"> ({code})</span> : null}
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="state empty">{children}</p>;
}

/** Renders `children(data)` once loaded; the loading or error state until then. */
export function Loaded<T>({
  resource,
  children,
}: {
  resource: Resource<T>;
  children: (data: T) => ComponentChildren;
}) {
  if (resource.data !== undefined) {
    return (
      <>
        {resource.error ? <ErrorNote error={resource.error} /> : null}
        {children(resource.data)}
      </>
    );
  }
  if (resource.error) return <ErrorNote error={resource.error} />;
  return <Loading />;
}

/** A time in the browser's time zone, with the exact instant in its datetime attribute. */
export function Time({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span class="muted">–</span>;
  const date = new Date(iso);
  return (
    <time dateTime={iso} title={date.toISOString()}>
      {date.toLocaleString()}
    </time>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge status-${status}`}>{status}</span>;
}

/** A secret shown once, in full, with a button that copies it. */
export function SecretOnce({ label, value }: { label: string; value: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <div class="secret">
      <span class="secret-label">{label}</span>
      <code class="secret-value" data-secret={label}>
        {value}
      </code>
      <button
        type="button"
        onClick={async () => {
          await navigator.clipboard.writeText(value);
          setCopied(true);
        }}
      >
        {copied ? "Copied" : "Copy"}
      </button>
    </div>
  );
}

/** A button that runs an action, shows it running and says what went wrong. */
export function ActionButton(props: {
  label: string;
  run: () => Promise<unknown>;
  confirm?: string;
  danger?: boolean;
  disabled?: boolean;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  return (
    <span class="action">
      <button
        type="button"
        class={props.danger ? "danger" : undefined}
        disabled={busy || props.disabled}
        onClick={async () => {
          if (props.confirm && !window.confirm(props.confirm)) return;
          setBusy(true);
          setError(undefined);
          try {
            await props.run();
          } catch (failure) {
            setError(failure as Error);
          } finally {
            setBusy(false);
          }
        }}
      >
        {props.label}
      </button>
      {error ? <ErrorNote error={error} /> : null}
    </span>
  );
}

export function Field(props: { label: string; children: ComponentChildren; hint?: string }) {
  return (
    // biome-ignore lint/a11y/noLabelWithoutControl: the control is the children, inside the label
    <label class="field">
      <span>{props.label}</span>
      {props.children}
      {props.hint ? <small>{props.hint}</small> : null}
    </label>
  );
}
