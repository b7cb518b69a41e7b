import { useState } from "preact/hooks";
import { api, type Page, query } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, Empty, ErrorNote, Field, Loaded, Time } from "../ui";

interface Suppression {
  address: string;
  reason: string;
  sourceMessageId: string | null;
  expiresAt: string | null;
  createdAt: string;
}

const reasons = ["manual", "hard_bounce", "complaint", "unsubscribe"];

export function Suppressions() {
  useTitle("Suppressions");
  const scope = useScope();
  const [q, setQ] = useState("");
  const list = useResource<Page<Suppression>>(`${scope.api}/suppressions${query({ q, limit: 200 })}`);
  const [error, setError] = useState<Error>();
  return (
    <>
      <h1>Suppressions</h1>
      <form
        class="inline-form"
        aria-label="Add a suppression"
        onSubmit={async (event) => {
          event.preventDefault();
          const form = event.currentTarget as HTMLFormElement;
          const data = new FormData(form);
          const expires = data.get("expiresAt") as string;
          setError(undefined);
          try {
            await api(`${scope.api}/suppressions`, {
              method: "POST",
              body: {
                address: (data.get("address") as string).trim(),
                reason: data.get("reason"),
                ...(expires ? { expiresAt: new Date(expires).toISOString() } : {}),
              },
            });
            form.reset();
            await list.reload();
          } catch (failure) {
            setError(failure as Error);
          }
        }}
      >
        <Field label="Address or *@domain">
          <input name="address" type="text" required />
        </Field>
        <Field label="Reason">
          <select name="reason">
            {reasons.map((reason) => (
              <option key={reason} value={reason}>
                {reason}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Expires (optional)">
          <input name="expiresAt" type="datetime-local" />
        </Field>
        <button type="submit">Suppress</button>
        {error ? <ErrorNote error={error} /> : null}
      </form>
      <Field label="Search">
        <input
          type="search"
          value={q}
          onInput={(event) => setQ((event.currentTarget as HTMLInputElement).value)}
        />
      </Field>
      <Loaded resource={list}>
        {(page) =>
          page.items.length === 0 ? (
            <Empty>No suppressions{q ? " match" : ""}.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Address</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Added</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((item) => (
                  <tr key={item.address}>
                    <td>{item.address}</td>
                    <td>{item.reason}</td>
                    <td>
                      <Time iso={item.createdAt} />
                    </td>
                    <td>
                      <Time iso={item.expiresAt} />
                    </td>
                    <td>
                      <ActionButton
                        label="Remove"
                        danger
                        run={async () => {
                          await api(`${scope.api}/suppressions/${encodeURIComponent(item.address)}`, {
                            method: "DELETE",
                          });
                          await list.reload();
                        }}
                      />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </>
  );
}
