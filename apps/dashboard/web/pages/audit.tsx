import { useEffect, useState } from "preact/hooks";
import { type AuditEvent, api, type Page } from "../api";
import { useTitle } from "../hooks";
import { Empty, ErrorNote, Loading, Time } from "../ui";

/** Most events kept on screen while following: the oldest go first. */
const maxShown = 500;

/** `fresh` and `current` as one list, newest first (ids increase), each event once. */
function merged(fresh: AuditEvent[], current: AuditEvent[] | undefined): AuditEvent[] {
  const byId = new Map([...(current ?? []), ...fresh].map((event) => [event.id, event]));
  return [...byId.values()].sort((x, y) => (BigInt(y.id) > BigInt(x.id) ? 1 : -1)).slice(0, maxShown);
}

/**
 * An audit log, newest first, a page at a time; "Follow" opens the live stream (Server-Sent Events,
 * the session cookie authenticates it) and puts each new event at the top.
 */
export function AuditLog({ page, stream }: { page: (cursor: string | null) => string; stream: string }) {
  useTitle("Audit log");
  const [items, setItems] = useState<AuditEvent[]>();
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [error, setError] = useState<Error>();
  const [following, setFollowing] = useState(false);

  // The first page's address, not the function (a new one at each render of the parent).
  const firstPage = page(null);
  useEffect(() => {
    setItems(undefined);
    api<Page<AuditEvent>>(firstPage).then(
      (first) => {
        setItems(first.items);
        setNextCursor(first.nextCursor);
      },
      (failure: Error) => setError(failure),
    );
  }, [firstPage]);

  useEffect(() => {
    if (!following) return;
    // The stream sends what is written from the moment it opens; what was written between the
    // page's load and then comes from reading the first page again, merged in by id.
    const source = new EventSource(stream, { withCredentials: true });
    source.addEventListener("audit", (message) => {
      const event = JSON.parse((message as MessageEvent<string>).data) as AuditEvent;
      setItems((current) => merged([event], current));
    });
    source.addEventListener("open", () => {
      api<Page<AuditEvent>>(firstPage).then(
        (first) => setItems((current) => merged(first.items, current)),
        (failure: Error) => setError(failure),
      );
    });
    return () => source.close();
  }, [following, stream, firstPage]);

  return (
    <>
      <h1>Audit log</h1>
      <div class="toolbar">
        <button type="button" aria-pressed={following} onClick={() => setFollowing(!following)}>
          {following ? "Stop following" : "Follow live"}
        </button>
        {following ? <span role="status">Following: new events appear at the top.</span> : null}
      </div>
      {error ? <ErrorNote error={error} /> : null}
      {!items ? (
        error ? null : (
          <Loading />
        )
      ) : items.length === 0 ? (
        <Empty>No audit events yet.</Empty>
      ) : (
        <table class="audit">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Action</th>
              <th scope="col">Actor</th>
              <th scope="col">IP</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody aria-live={following ? "polite" : "off"}>
            {items.map((event) => (
              <tr key={event.id} data-action={event.action}>
                <td>
                  <Time iso={event.createdAt} />
                </td>
                <td>{event.action}</td>
                <td>{event.actor}</td>
                <td>{event.ip ?? "–"}</td>
                <td>
                  <code class="details">{JSON.stringify(event.details)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {nextCursor ? (
        <button
          type="button"
          onClick={async () => {
            const older = await api<Page<AuditEvent>>(page(nextCursor));
            setItems((current) => [...(current ?? []), ...older.items]);
            setNextCursor(older.nextCursor);
          }}
        >
          Older events
        </button>
      ) : null}
    </>
  );
}
