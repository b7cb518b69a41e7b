import { useState } from "preact/hooks";
import { api, type Page } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, Empty, ErrorNote, Field, Loaded, SecretOnce, StatusBadge, Time } from "../ui";

interface Webhook {
  id: string;
  url: string;
  description: string | null;
  events: string[];
  status: "active" | "disabled";
  disabledReason: string | null;
  disabledAt: string | null;
  failingSince: string | null;
  createdAt: string;
}

interface Delivery {
  id: string;
  eventType: string;
  status: "pending" | "succeeded" | "failed";
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: string;
  attempts: Array<{
    number: number;
    startedAt: string;
    durationMs: number;
    statusCode: number | null;
    response: string | null;
    error: string | null;
  }>;
}

/** The part of the API's OpenAPI document that lists the event types an endpoint may subscribe to. */
interface OpenApiDocument {
  paths?: Record<
    string,
    {
      post?: {
        requestBody?: {
          content?: Record<
            string,
            { schema?: { properties?: { events?: { items?: { enum?: string[] } } } } }
          >;
        };
      };
    }
  >;
}

/**
 * The event types `POST /v1/webhooks` accepts, as the API's own OpenAPI document states them: the
 * page offers exactly what the API validates, and a new type appears here without a change.
 */
function subscribableTypes(document: OpenApiDocument): string[] {
  const types =
    document.paths?.["/v1/webhooks"]?.post?.requestBody?.content?.["application/json"]?.schema?.properties
      ?.events?.items?.enum;
  if (!types?.length) throw new Error("the API's description names no webhook event types");
  return types;
}

/** How many characters of an endpoint's answer the deliveries log shows (the API keeps 1024 bytes). */
const answerPreviewLength = 120;
/** The deliveries log is read again this often, so a test event or a retry shows its outcome. */
const deliveriesRefreshMs = 2_000;

/**
 * A project's webhook endpoints (docs/webhooks.md): add one (its signing secret shown once),
 * enable, disable, delete, send a test event; per endpoint its deliveries log with replays.
 */
export function Webhooks() {
  useTitle("Webhooks");
  const scope = useScope();
  const base = `${scope.api}/webhooks`;
  const list = useResource<{ items: Webhook[] }>(base);
  const [created, setCreated] = useState<{ url: string; secret: string }>();
  /** The endpoint whose deliveries log is shown. */
  const [open, setOpen] = useState<string>();
  const openHook = list.data?.items.find((hook) => hook.id === open);
  return (
    <>
      <h1>Webhooks</h1>
      {created ? (
        <section class="card issued" aria-labelledby="created">
          <h2 id="created">Signing secret of {created.url}: shown once, copy it now</h2>
          <SecretOnce label="Signing secret" value={created.secret} />
          <button type="button" onClick={() => setCreated(undefined)}>
            Done
          </button>
        </section>
      ) : null}
      <NewWebhook
        base={base}
        onCreated={async (hook) => {
          setCreated(hook);
          await list.reload();
        }}
      />
      <Loaded resource={list}>
        {({ items }) =>
          items.length === 0 ? (
            <Empty>No webhook endpoints.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">URL</th>
                  <th scope="col">Events</th>
                  <th scope="col">State</th>
                  <th scope="col">Description</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {items.map((hook) => (
                  <tr key={hook.id} data-webhook={hook.url}>
                    <td>
                      <code>{hook.url}</code>
                    </td>
                    <td>{hook.events.join(", ")}</td>
                    <td>
                      <StatusBadge status={hook.status} />
                      {hook.disabledReason ? <div class="muted">{hook.disabledReason}</div> : null}
                      {hook.failingSince ? (
                        <div class="muted">
                          failing since <Time iso={hook.failingSince} />
                        </div>
                      ) : null}
                    </td>
                    <td>{hook.description ?? <span class="muted">–</span>}</td>
                    <td>
                      <span class="row-actions">
                        <button
                          type="button"
                          aria-expanded={open === hook.id}
                          aria-controls={open === hook.id ? `deliveries-${hook.id}` : undefined}
                          onClick={() => setOpen(open === hook.id ? undefined : hook.id)}
                        >
                          Deliveries
                        </button>
                        {hook.status === "active" ? (
                          <ActionButton
                            label="Send test event"
                            run={async () => {
                              await api(`${base}/${hook.id}/test`, { method: "POST" });
                              setOpen(hook.id);
                            }}
                          />
                        ) : null}
                        <ActionButton
                          label={hook.status === "active" ? "Disable" : "Enable"}
                          run={async () => {
                            await api(`${base}/${hook.id}`, {
                              method: "PATCH",
                              body: { enabled: hook.status !== "active" },
                            });
                            await list.reload();
                          }}
                        />
                        <ActionButton
                          label="Delete"
                          danger
                          confirm={`Delete the webhook to ${hook.url} and its deliveries log?`}
                          run={async () => {
                            await api(`${base}/${hook.id}`, { method: "DELETE" });
                            if (open === hook.id) setOpen(undefined);
                            await list.reload();
                          }}
                        />
                      </span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
      {openHook ? (
        <Deliveries
          key={openHook.id}
          base={`${base}/${openHook.id}`}
          id={`deliveries-${openHook.id}`}
          hook={openHook}
        />
      ) : null}
    </>
  );
}

function NewWebhook({
  base,
  onCreated,
}: {
  base: string;
  onCreated: (hook: { url: string; secret: string }) => Promise<void>;
}) {
  const description = useResource<OpenApiDocument>("/docs/json");
  const [error, setError] = useState<Error>();
  let types: string[] | undefined;
  let typesError: Error | undefined = description.error;
  if (description.data) {
    try {
      types = subscribableTypes(description.data);
    } catch (failure) {
      typesError = failure as Error;
    }
  }
  return (
    <details class="card">
      <summary>New webhook</summary>
      <form
        aria-label="New webhook"
        onSubmit={async (event) => {
          event.preventDefault();
          const form = event.currentTarget as HTMLFormElement;
          const data = new FormData(form);
          const text = (name: string) => ((data.get(name) as string | null) ?? "").trim();
          setError(undefined);
          try {
            const hook = await api<{ url: string; secret: string }>(base, {
              method: "POST",
              body: {
                url: text("url"),
                events: data.getAll("events"),
                ...(text("description") ? { description: text("description") } : {}),
              },
            });
            form.reset();
            await onCreated(hook);
          } catch (failure) {
            setError(failure as Error);
          }
        }}
      >
        <Field label="URL" hint="http:// or https://; events are POSTed to it, signed with its secret">
          <input name="url" type="url" required placeholder="https://app.example.com/hooks/postern" />
        </Field>
        <fieldset class="event-types">
          <legend>Event types</legend>
          {types ? (
            types.map((type) => (
              <label key={type} class="check">
                <input type="checkbox" name="events" value={type} /> {type}
              </label>
            ))
          ) : typesError ? (
            <ErrorNote error={typesError} />
          ) : (
            <p class="state" role="status">
              Loading…
            </p>
          )}
        </fieldset>
        <Field label="Description (optional)">
          <input name="description" type="text" maxLength={500} />
        </Field>
        <button type="submit" disabled={!types}>
          Add webhook
        </button>
        {error ? <ErrorNote error={error} /> : null}
      </form>
    </details>
  );
}

/** The text of an attempt's answer: its status code and the first bytes of its body, or the error. */
function answerOf(attempt: Delivery["attempts"][number] | undefined): string {
  if (!attempt) return "";
  const body = attempt.response ?? attempt.error ?? "";
  const preview = body.length > answerPreviewLength ? `${body.slice(0, answerPreviewLength)}…` : body;
  return attempt.statusCode === null ? preview : `${attempt.statusCode} ${preview}`.trim();
}

function Deliveries({ base, id, hook }: { base: string; id: string; hook: Webhook }) {
  const deliveries = useResource<Page<Delivery>>(`${base}/deliveries?limit=50`, deliveriesRefreshMs);
  const [replayed, setReplayed] = useState<number>();
  const [error, setError] = useState<Error>();
  return (
    <section id={id} aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`}>Deliveries to {hook.url}</h2>
      <form
        class="inline-form"
        aria-label="Replay failed deliveries"
        onSubmit={async (event) => {
          event.preventDefault();
          const since = new FormData(event.currentTarget as HTMLFormElement).get("since") as string;
          setError(undefined);
          setReplayed(undefined);
          try {
            // datetime-local is the browser's zone; the API takes an instant.
            const answer = await api<{ replayed: number }>(`${base}/replay`, {
              method: "POST",
              body: { since: new Date(since).toISOString() },
            });
            setReplayed(answer.replayed);
            await deliveries.reload();
          } catch (failure) {
            setError(failure as Error);
          }
        }}
      >
        <Field label="Failed since">
          <input name="since" type="datetime-local" required />
        </Field>
        <button type="submit">Replay failed since</button>
        {replayed !== undefined ? (
          <p class="state" role="status">
            {replayed} failed deliveries sent again.
          </p>
        ) : null}
        {error ? <ErrorNote error={error} /> : null}
      </form>
      <Loaded resource={deliveries}>
        {(page) =>
          page.items.length === 0 ? (
            <Empty>No deliveries yet: send a test event, or wait for an event of its types.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Created</th>
                  <th scope="col">Event</th>
                  <th scope="col">Status</th>
                  <th scope="col">Attempts</th>
                  <th scope="col">Latency</th>
                  <th scope="col">Answer</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((delivery) => {
                  const last = delivery.attempts[delivery.attempts.length - 1];
                  return (
                    <tr key={delivery.id} data-delivery={delivery.id} data-event-type={delivery.eventType}>
                      <td>
                        <Time iso={delivery.createdAt} />
                      </td>
                      <td>{delivery.eventType}</td>
                      <td>
                        <StatusBadge status={delivery.status} />
                        {delivery.status === "pending" && delivery.nextAttemptAt ? (
                          <div class="muted">
                            next <Time iso={delivery.nextAttemptAt} />
                          </div>
                        ) : null}
                      </td>
                      <td>{delivery.attempts.length}</td>
                      <td>{last ? `${last.durationMs} ms` : <span class="muted">–</span>}</td>
                      <td>
                        <code class="details">{answerOf(last)}</code>
                      </td>
                      <td>
                        <ActionButton
                          label="Replay"
                          disabled={hook.status !== "active"}
                          run={async () => {
                            await api(`${base}/deliveries/${delivery.id}/replay`, { method: "POST" });
                            await deliveries.reload();
                          }}
                        />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}
