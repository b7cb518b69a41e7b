import { useEffect, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { api, type MessageDetail, type MessageEvent, type SmtpResult } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, Empty, ErrorNote, Loaded, Loading, StatusBadge, Time } from "../ui";

/** Which actions a status allows (the API's transition table answers 409 to any other). */
const actionsByStatus: Record<string, Array<"retry" | "cancel" | "approve" | "deny">> = {
  queued: ["cancel"],
  deferred: ["retry", "cancel"],
  failed: ["retry"],
  held: ["approve", "deny", "cancel"],
};

export function MessageView({ id }: { id: string }) {
  useTitle("Message");
  const scope = useScope();
  const base = `${scope.api}/messages/${id}`;
  // Read again while the message may still change.
  const message = useResource<MessageDetail>(base, 3_000);
  const events = useResource<{ items: MessageEvent[] }>(`${base}/events`, 3_000);
  return (
    <>
      <p>
        <Link href="/messages">← Messages</Link>
      </p>
      <Loaded resource={message}>
        {(m) => (
          <>
            <h1>{m.subject ?? "(no subject)"}</h1>
            <div class="toolbar">
              <StatusBadge status={m.status} />
              {(actionsByStatus[m.status] ?? []).map((action) => (
                <ActionButton
                  key={action}
                  label={action[0]?.toUpperCase() + action.slice(1)}
                  danger={action === "deny" || action === "cancel"}
                  confirm={
                    action === "deny" || action === "cancel"
                      ? `${action} this message? It will never be delivered.`
                      : undefined
                  }
                  run={async () => {
                    await api(`${base}/${action}`, { method: "POST" });
                    await Promise.all([message.reload(), events.reload()]);
                  }}
                />
              ))}
              <a class="button" href={`${base}/raw`} download={`${m.id}.eml`}>
                Download raw message
              </a>
            </div>
            <section aria-labelledby="envelope">
              <h2 id="envelope">Envelope</h2>
              <dl class="facts">
                <dt>Id</dt>
                <dd>
                  <code>{m.id}</code>
                </dd>
                <dt>MAIL FROM</dt>
                <dd>{m.from || "<>"}</dd>
                <dt>RCPT TO</dt>
                <dd>{m.to.join(", ")}</dd>
                <dt>Message-ID</dt>
                <dd>{m.messageId ?? "–"}</dd>
                <dt>Size</dt>
                <dd>{m.size.toLocaleString()} bytes</dd>
                <dt>Accepted</dt>
                <dd>
                  <Time iso={m.createdAt} />
                </dd>
                <dt>Next attempt</dt>
                <dd>
                  <Time iso={m.nextAttemptAt} />
                </dd>
                <dt>Delivered</dt>
                <dd>
                  <Time iso={m.deliveredAt} />
                </dd>
                <dt>Last error</dt>
                <dd>{m.lastError ?? "–"}</dd>
              </dl>
            </section>
            <section aria-labelledby="recipients">
              <h2 id="recipients">Recipients</h2>
              <table>
                <thead>
                  <tr>
                    <th scope="col">Address</th>
                    <th scope="col">Status</th>
                    <th scope="col">Reply</th>
                  </tr>
                </thead>
                <tbody>
                  {m.recipients.map((r) => (
                    <tr key={r.address}>
                      <td>{r.address}</td>
                      <td>
                        <StatusBadge status={r.status} />
                      </td>
                      <td>{smtpReply(r)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
            <section aria-labelledby="attempts">
              <h2 id="attempts">Delivery attempts</h2>
              {m.attempts.length === 0 ? (
                <Empty>No attempt yet.</Empty>
              ) : (
                <table>
                  <thead>
                    <tr>
                      <th scope="col">#</th>
                      <th scope="col">Started</th>
                      <th scope="col">Upstream</th>
                      <th scope="col">Outcome</th>
                      <th scope="col">Reply</th>
                      <th scope="col">Duration</th>
                    </tr>
                  </thead>
                  <tbody>
                    {m.attempts.map((a) => (
                      <tr key={a.number}>
                        <td>{a.number}</td>
                        <td>
                          <Time iso={a.startedAt} />
                        </td>
                        <td>{a.upstreamHost}</td>
                        <td>
                          <StatusBadge status={a.outcome} />
                        </td>
                        <td>{smtpReply(a)}</td>
                        <td>{a.durationMs} ms</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </section>
            <Headers rawPath={`${base}/raw`} />
          </>
        )}
      </Loaded>
      <section aria-labelledby="events">
        <h2 id="events">Events</h2>
        <Loaded resource={events}>
          {(page) =>
            page.items.length === 0 ? (
              <Empty>No events.</Empty>
            ) : (
              <ol class="events">
                {page.items.map((event) => (
                  <li key={event.id}>
                    <Time iso={event.createdAt} /> <strong>{event.type}</strong>{" "}
                    <code class="details">{JSON.stringify(event.data)}</code>
                  </li>
                ))}
              </ol>
            )
          }
        </Loaded>
      </section>
    </>
  );
}

/** An SMTP reply as the upstream sent it (its text starts with the codes), else its codes. */
function smtpReply(result: SmtpResult): string {
  return result.response ?? (`${result.code ?? ""} ${result.enhancedCode ?? ""}`.trim() || "–");
}

/** Largest header section read; a header section is a few KiB, the body may be 25 MiB. */
const headerLimitBytes = 256 * 1024;

/**
 * The message's header section, read from the start of its raw bytes and no further: the stream
 * is cancelled at the blank line that ends the headers.
 */
function Headers({ rawPath }: { rawPath: string }) {
  const [headers, setHeaders] = useState<string>();
  const [error, setError] = useState<Error>();
  useEffect(() => {
    const controller = new AbortController();
    (async () => {
      const response = await fetch(rawPath, { credentials: "same-origin", signal: controller.signal });
      if (!response.ok || !response.body) {
        throw new Error(
          response.status === 410
            ? "the stored bytes were dropped after their retention"
            : `the server answered ${response.status}`,
        );
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      while (text.length < headerLimitBytes) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
        if (text.includes("\r\n\r\n")) break;
      }
      await reader.cancel().catch(() => undefined);
      const end = text.indexOf("\r\n\r\n");
      setHeaders(end >= 0 ? text.slice(0, end) : text);
    })().catch((failure: Error) => {
      if (!controller.signal.aborted) setError(failure);
    });
    return () => controller.abort();
  }, [rawPath]);
  return (
    <section aria-labelledby="headers">
      <h2 id="headers">Headers</h2>
      {error ? (
        <ErrorNote error={error} />
      ) : headers === undefined ? (
        <Loading />
      ) : (
        <pre class="headers">{headers}</pre>
      )}
    </section>
  );
}
