import { useState } from "preact/hooks";
import { api } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, Empty, ErrorNote, Field, Loaded, StatusBadge, Time } from "../ui";

interface DnsRecord {
  purpose: string;
  type: string;
  name: string;
  value: string;
  state?: string;
  found?: string[];
}

interface Domain {
  id: string;
  domain: string;
  verified: boolean;
  verifiedAt: string | null;
  createdAt: string;
  keys: Array<{ selector: string; algorithm: string; status: string }>;
  records: DnsRecord[];
}

export function Domains() {
  useTitle("Domains");
  const scope = useScope();
  const list = useResource<{ items: Domain[] }>(`${scope.api}/domains`);
  const [error, setError] = useState<Error>();
  // The records as the latest verify found them, by domain id.
  const [verified, setVerified] = useState<Record<string, DnsRecord[]>>({});
  return (
    <>
      <h1>Domains</h1>
      <form
        class="inline-form"
        aria-label="Add a domain"
        onSubmit={async (event) => {
          event.preventDefault();
          const form = event.currentTarget as HTMLFormElement;
          const data = new FormData(form);
          setError(undefined);
          try {
            await api(`${scope.api}/domains`, {
              method: "POST",
              body: { domain: (data.get("domain") as string).trim(), algorithm: data.get("algorithm") },
            });
            form.reset();
            await list.reload();
          } catch (failure) {
            setError(failure as Error);
          }
        }}
      >
        <Field label="Domain">
          <input name="domain" type="text" required placeholder="example.com" />
        </Field>
        <Field label="DKIM key">
          <select name="algorithm">
            <option value="rsa">RSA 2048</option>
            <option value="ed25519">Ed25519</option>
          </select>
        </Field>
        <button type="submit">Add domain</button>
        {error ? <ErrorNote error={error} /> : null}
      </form>
      <Loaded resource={list}>
        {(page) =>
          page.items.length === 0 ? (
            <Empty>No domains yet: add one to get its DKIM key and the DNS records to publish.</Empty>
          ) : (
            page.items.map((domain) => (
              <section key={domain.id} class="card" aria-label={`Domain ${domain.domain}`}>
                <h2>
                  {domain.domain} <StatusBadge status={domain.verified ? "verified" : "unverified"} />
                </h2>
                <p class="muted">
                  Added <Time iso={domain.createdAt} />; keys:{" "}
                  {domain.keys.map((key) => `${key.selector} (${key.algorithm}, ${key.status})`).join(", ")}
                </p>
                <table>
                  <caption class="visually-hidden">DNS records to publish for {domain.domain}</caption>
                  <thead>
                    <tr>
                      <th scope="col">Purpose</th>
                      <th scope="col">Type</th>
                      <th scope="col">Name</th>
                      <th scope="col">Value</th>
                      <th scope="col">In DNS</th>
                    </tr>
                  </thead>
                  <tbody>
                    {(verified[domain.id] ?? domain.records).map((record) => (
                      <tr key={`${record.purpose}-${record.name}`}>
                        <td>{record.purpose}</td>
                        <td>{record.type}</td>
                        <td>
                          <code>{record.name}</code>
                        </td>
                        <td>
                          <code class="record-value">{record.value}</code>
                        </td>
                        <td>{record.state ? <StatusBadge status={record.state} /> : "not checked"}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                <div class="toolbar">
                  <ActionButton
                    label="Verify"
                    run={async () => {
                      const result = await api<Domain>(`${scope.api}/domains/${domain.id}/verify`, {
                        method: "POST",
                      });
                      setVerified((current) => ({ ...current, [domain.id]: result.records }));
                      await list.reload();
                    }}
                  />
                  <ActionButton
                    label="Delete"
                    danger
                    confirm={`Delete ${domain.domain} and its keys? Messages from it are no longer signed.`}
                    run={async () => {
                      await api(`${scope.api}/domains/${domain.id}`, { method: "DELETE" });
                      await list.reload();
                    }}
                  />
                </div>
              </section>
            ))
          )
        }
      </Loaded>
    </>
  );
}
