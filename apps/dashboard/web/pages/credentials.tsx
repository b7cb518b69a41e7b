import { useState } from "preact/hooks";
import { api, type ProjectDetail } from "../api";
import { useResource, useTitle } from "../hooks";
import { useScope } from "../scope";
import { ActionButton, Empty, Loaded, SecretOnce, StatusBadge, Time } from "../ui";

type Issued = { kind: "credential"; username: string; password: string } | { kind: "token"; token: string };

/**
 * SMTP credentials and API tokens of a project: which exist and when each was last used; the
 * operator also issues (the secret shown once) and revokes them, as the operator API does.
 */
export function Credentials() {
  useTitle("Credentials and tokens");
  const scope = useScope();
  const base = `/admin/projects/${scope.projectId}`;
  const project = useResource<ProjectDetail>(scope.operator ? base : "/v1/project");
  const manage = scope.operator;
  const [issued, setIssued] = useState<Issued>();
  return (
    <>
      <h1>Credentials and tokens</h1>
      {manage ? null : (
        <p class="muted">
          Issuing and revoking credentials and tokens is the operator's: a token that could issue others would
          outlive its own revocation.
        </p>
      )}
      {issued ? (
        <section class="card issued" aria-labelledby="issued">
          <h2 id="issued">Shown once: copy it now</h2>
          {issued.kind === "credential" ? (
            <>
              <SecretOnce label="SMTP username" value={issued.username} />
              <SecretOnce label="SMTP password" value={issued.password} />
            </>
          ) : (
            <SecretOnce label="API token" value={issued.token} />
          )}
          <button type="button" onClick={() => setIssued(undefined)}>
            Done
          </button>
        </section>
      ) : null}
      <Loaded resource={project}>
        {(p) => (
          <>
            <section aria-labelledby="credentials">
              <h2 id="credentials">SMTP credentials</h2>
              {manage ? (
                <ActionButton
                  label="New SMTP credential"
                  run={async () => {
                    const created = await api<{ username: string; password: string }>(`${base}/credentials`, {
                      method: "POST",
                    });
                    setIssued({ kind: "credential", ...created });
                    await project.reload();
                  }}
                />
              ) : null}
              {p.credentials.length === 0 ? (
                <Empty>No credentials.</Empty>
              ) : (
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Username</th>
                      <th scope="col">Created</th>
                      <th scope="col">Last used</th>
                      <th scope="col">State</th>
                      <th scope="col">Actions</th>
                    </tr>
                  </thead>
                  <tbody>
                    {p.credentials.map((credential) => (
                      <tr key={credential.id} data-credential={credential.username}>
                        <td>
                          <code>{credential.username}</code>
                        </td>
                        <td>
                          <Time iso={credential.createdAt} />
                        </td>
                        <td>
                          <Time iso={credential.lastUsedAt} />
                        </td>
                        <td>
                          <StatusBadge status={credential.revokedAt ? "revoked" : "active"} />
                        </td>
                        <td>
                          {credential.revokedAt || !manage ? null : (
                            <ActionButton
                              label="Revoke"
                              danger
                              confirm={`Revoke ${credential.username}? SMTP clients using it are refused at once.`}
                              run={async () => {
                                await api(`${base}/credentials/${credential.id}`, { method: "DELETE" });
                                await project.reload();
                              }}
                            />
                          )}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </section>
            <section aria-labelledby="tokens">
              <h2 id="tokens">API tokens</h2>
              {manage ? (
                <ActionButton
                  label="New API token"
                  run={async () => {
                    const created = await api<{ token: string }>(`${base}/tokens`, { method: "POST" });
                    setIssued({ kind: "token", token: created.token });
                    await project.reload();
                  }}
                />
              ) : null}
              {p.tokens.length === 0 ? (
                <Empty>No tokens.</Empty>
              ) : (
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Token</th>
                      <th scope="col">Created</th>
                      <th scope="col">Last used</th>
                      <th scope="col">State</th>
                      <th scope="col">Actions</th>
                    </tr>
                  </thead>
                  <tbody>
                    {p.tokens.map((token) => (
                      <tr key={token.id}>
                        <td>
                          <code>{token.prefix}…</code>
                        </td>
                        <td>
                          <Time iso={token.createdAt} />
                        </td>
                        <td>
                          <Time iso={token.lastUsedAt} />
                        </td>
                        <td>
                          <StatusBadge status={token.revokedAt ? "revoked" : "active"} />
                        </td>
                        <td>
                          {token.revokedAt || !manage ? null : (
                            <ActionButton
                              label="Revoke"
                              danger
                              confirm="Revoke this token? Its API calls and dashboard sessions end at once."
                              run={async () => {
                                await api(`${base}/tokens/${token.id}`, { method: "DELETE" });
                                await project.reload();
                              }}
                            />
                          )}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </section>
          </>
        )}
      </Loaded>
    </>
  );
}
