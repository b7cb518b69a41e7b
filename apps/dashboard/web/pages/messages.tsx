import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { api, type MessageSummary, type Page, query } from "../api";
import { useTitle } from "../hooks";
import { useScope } from "../scope";
import { Empty, ErrorNote, Field, Loading, StatusBadge, Time } from "../ui";

export const messageStatuses = [
  "queued",
  "deferred",
  "delivered",
  "failed",
  "cancelled",
  "held",
  "denied",
  "sandboxed",
] as const;

/** How often the first page is read again for new messages. */
const liveMs = 2_000;

export interface MessageFilter {
  status?: string;
  from?: string;
  to?: string;
  subject?: string;
  createdAfter?: string;
  createdBefore?: string;
}

/** `datetime-local` values are the browser's local time; the API takes instants. */
const instant = (local: string | undefined) => (local ? new Date(local).toISOString() : undefined);

export function messagesQuery(
  filter: MessageFilter,
  extra: Record<string, string | number | undefined> = {},
) {
  return query({
    ...filter,
    createdAfter: instant(filter.createdAfter),
    createdBefore: instant(filter.createdBefore),
    ...extra,
  });
}

/**
 * Newest first, a page at a time (the API's keyset cursor); the first page is read again every
 * `liveMs`, and messages that were not there are added at the top as they arrive.
 */
export function useMessageList(filter: MessageFilter, limit = 50) {
  const scope = useScope();
  const [items, setItems] = useState<MessageSummary[]>();
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error>();
  const generation = useRef(0);
  const path = `${scope.api}/messages${messagesQuery(filter, { limit })}`;

  const readFirstPage = useCallback(
    async (replace: boolean) => {
      const asked = generation.current;
      try {
        const page = await api<Page<MessageSummary>>(path);
        if (asked !== generation.current) return;
        setError(undefined);
        if (replace) {
          setItems(page.items);
          setNextCursor(page.nextCursor);
          return;
        }
        setItems((current) => {
          if (!current) return page.items;
          const fresh = new Map(page.items.map((item) => [item.id, item]));
          const added = page.items.filter((item) => !current.some((known) => known.id === item.id));
          return [...added, ...current.map((known) => fresh.get(known.id) ?? known)];
        });
      } catch (failure) {
        if (asked === generation.current) setError(failure as Error);
      }
    },
    [path],
  );

  useEffect(() => {
    generation.current++;
    setItems(undefined);
    void readFirstPage(true);
    const timer = setInterval(() => void readFirstPage(false), liveMs);
    return () => clearInterval(timer);
  }, [readFirstPage]);

  const loadMore = async () => {
    if (!nextCursor) return;
    const page = await api<Page<MessageSummary>>(
      `${scope.api}/messages${messagesQuery(filter, { limit, cursor: nextCursor })}`,
    );
    setItems((current) => [...(current ?? []), ...page.items]);
    setNextCursor(page.nextCursor);
  };

  return { items, nextCursor, error, loadMore, reload: () => readFirstPage(true) };
}

export function Messages() {
  useTitle("Messages");
  const [filter, setFilter] = useState<MessageFilter>({});
  const list = useMessageList(filter);
  return (
    <>
      <h1>Messages</h1>
      <FilterForm filter={filter} onChange={setFilter} withStatus />
      <MessageTable list={list} />
    </>
  );
}

export function FilterForm(props: {
  filter: MessageFilter;
  onChange: (filter: MessageFilter) => void;
  withStatus?: boolean;
}) {
  return (
    <form
      class="filters"
      aria-label="Filter messages"
      onSubmit={(event) => {
        event.preventDefault();
        const form = new FormData(event.currentTarget as HTMLFormElement);
        const value = (name: string) => (form.get(name) as string | null)?.trim() || undefined;
        props.onChange({
          status: value("status"),
          from: value("from"),
          to: value("to"),
          subject: value("subject"),
          createdAfter: value("createdAfter"),
          createdBefore: value("createdBefore"),
        });
      }}
    >
      {props.withStatus ? (
        <Field label="Status">
          <select name="status">
            <option value="">any</option>
            {messageStatuses.map((status) => (
              <option key={status} value={status}>
                {status}
              </option>
            ))}
          </select>
        </Field>
      ) : null}
      <Field label="Sender">
        <input name="from" type="text" defaultValue={props.filter.from} placeholder="app@example.com" />
      </Field>
      <Field label="Recipient">
        <input name="to" type="text" defaultValue={props.filter.to} placeholder="user@example.net" />
      </Field>
      <Field label="Subject contains">
        <input name="subject" type="text" defaultValue={props.filter.subject} />
      </Field>
      <Field label="Accepted after">
        <input name="createdAfter" type="datetime-local" defaultValue={props.filter.createdAfter} />
      </Field>
      <Field label="Accepted before">
        <input name="createdBefore" type="datetime-local" defaultValue={props.filter.createdBefore} />
      </Field>
      <div class="buttons">
        <button type="submit">Apply</button>
        <button
          type="reset"
          onClick={() => {
            props.onChange({});
          }}
        >
          Clear
        </button>
      </div>
    </form>
  );
}

export function MessageTable(props: {
  list: ReturnType<typeof useMessageList>;
  actions?: (message: MessageSummary) => ComponentChildren;
}) {
  const { items, error, nextCursor, loadMore } = props.list;
  if (!items) return error ? <ErrorNote error={error} /> : <Loading />;
  return (
    <>
      {error ? <ErrorNote error={error} /> : null}
      {items.length === 0 ? (
        <Empty>No messages match.</Empty>
      ) : (
        <table class="messages">
          <caption class="visually-hidden">Messages, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Accepted</th>
              <th scope="col">Status</th>
              <th scope="col">From</th>
              <th scope="col">To</th>
              <th scope="col">Subject</th>
              <th scope="col">Attempts</th>
              {props.actions ? <th scope="col">Actions</th> : null}
            </tr>
          </thead>
          <tbody>
            {items.map((message) => (
              <tr key={message.id} data-message-id={message.id}>
                <td>
                  <Time iso={message.createdAt} />
                </td>
                <td>
                  <StatusBadge status={message.status} />
                </td>
                <td>{message.from || <span class="muted">(null sender)</span>}</td>
                <td>{message.to.join(", ")}</td>
                <td>
                  <Link href={`/messages/${message.id}`}>{message.subject ?? "(no subject)"}</Link>
                </td>
                <td>{message.attemptCount}</td>
                {props.actions ? <td>{props.actions(message)}</td> : null}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {nextCursor ? (
        <button type="button" onClick={() => void loadMore()}>
          Older messages
        </button>
      ) : null}
    </>
  );
}
