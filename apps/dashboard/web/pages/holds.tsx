import { useState } from "preact/hooks";
import { api } from "../api";
import { useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, ErrorNote } from "../ui";
import { FilterForm, type MessageFilter, MessageTable, useMessageList } from "./messages";

type BulkAction = "approve" | "deny";

/** The API's bulk filter: the hold queue's, with the dates as instants. */
function bulkFilter(filter: MessageFilter) {
  const instant = (local?: string) => (local ? new Date(local).toISOString() : undefined);
  return {
    status: "held",
    from: filter.from,
    to: filter.to,
    createdAfter: instant(filter.createdAfter),
    createdBefore: instant(filter.createdBefore),
  };
}

/**
 * Held messages (rules' `hold`), each approved or denied on its own, or all that a filter matches
 * at once: a dry run first says how many, then the action itself (one audit event for the lot).
 */
export function Holds() {
  useTitle("Hold queue");
  const scope = useScope();
  const [filter, setFilter] = useState<MessageFilter>({});
  const list = useMessageList({ ...filter, status: "held" });
  const [dryRun, setDryRun] = useState<{ action: BulkAction; matched: number; changed: number }>();
  const [done, setDone] = useState<string>();
  const [error, setError] = useState<Error>();

  const bulk = async (action: BulkAction, dry: boolean) => {
    setError(undefined);
    try {
      const result = await api<{ matched: number; changed: number }>(`${scope.api}/messages/actions`, {
        method: "POST",
        body: { action, filter: bulkFilter(filter), dryRun: dry },
      });
      if (dry) setDryRun({ action, ...result });
      else {
        setDryRun(undefined);
        setDone(
          `${action === "approve" ? "Approved" : "Denied"} ${result.changed} of ${result.matched} messages.`,
        );
        await list.reload();
      }
    } catch (failure) {
      setError(failure as Error);
    }
  };

  return (
    <>
      <h1>Hold queue</h1>
      <FilterForm
        filter={filter}
        onChange={(next) => {
          setFilter(next);
          setDryRun(undefined);
        }}
      />
      <section aria-labelledby="bulk" class="bulk">
        <h2 id="bulk">Every held message the filter matches</h2>
        <div class="toolbar">
          <button type="button" onClick={() => void bulk("approve", true)}>
            Count for approve
          </button>
          <button type="button" onClick={() => void bulk("deny", true)}>
            Count for deny
          </button>
        </div>
        {dryRun ? (
          <p role="status" data-dry-run>
            {dryRun.matched} held messages match; {dryRun.changed} would be{" "}
            {dryRun.action === "approve" ? "approved" : "denied"}.{" "}
            <button
              type="button"
              class={dryRun.action === "deny" ? "danger" : undefined}
              onClick={() => void bulk(dryRun.action, false)}
            >
              {dryRun.action === "approve" ? "Approve" : "Deny"} {dryRun.changed}
            </button>
          </p>
        ) : null}
        {done ? <p role="status">{done}</p> : null}
        {error ? <ErrorNote error={error} /> : null}
      </section>
      <MessageTable
        list={list}
        actions={(message) => (
          <span class="row-actions">
            <ActionButton
              label="Approve"
              run={async () => {
                await api(`${scope.api}/messages/${message.id}/approve`, { method: "POST" });
                await list.reload();
              }}
            />
            <ActionButton
              label="Deny"
              danger
              run={async () => {
                await api(`${scope.api}/messages/${message.id}/deny`, { method: "POST" });
                await list.reload();
              }}
            />
          </span>
        )}
      />
    </>
  );
}
