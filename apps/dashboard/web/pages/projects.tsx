import { useState } from "preact/hooks";
import { Link } from "wouter-preact";
import { api, type CreatedProject, type Project } from "../api";
import { useResource, useTitle } from "../hooks";
import { ActionButton, Empty, ErrorNote, Field, Loaded, SecretOnce, StatusBadge, Time } from "../ui";

const list = (text: string) =>
  text
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter(Boolean);

/** The operator's projects: create (its first secrets shown once), suspend, resume, delete, open. */
export function Projects() {
  useTitle("Projects");
  const projects = useResource<{ items: Project[] }>("/admin/projects");
  const [created, setCreated] = useState<CreatedProject>();
  const [error, setError] = useState<Error>();
  return (
    <>
      <h1>Projects</h1>
      {created ? (
        <section class="card issued" aria-labelledby="created">
          <h2 id="created">Project {created.name} created: its secrets are shown once, copy them now</h2>
          <SecretOnce label="SMTP username" value={created.smtp.username} />
          <SecretOnce label="SMTP password" value={created.smtp.password} />
          <SecretOnce label="API token" value={created.apiToken.token} />
          <button type="button" onClick={() => setCreated(undefined)}>
            Done
          </button>
        </section>
      ) : null}
      <details class="card">
        <summary>New project</summary>
        <form
          aria-label="New project"
          onSubmit={async (event) => {
            event.preventDefault();
            const form = event.currentTarget as HTMLFormElement;
            const data = new FormData(form);
            const text = (name: string) => ((data.get(name) as string | null) ?? "").trim();
            const number = (name: string) => (text(name) ? Number(text(name)) : undefined);
            setError(undefined);
            try {
              const perMinute = number("perMinute");
              const daily = number("daily");
              const project = await api<CreatedProject>("/admin/projects", {
                method: "POST",
                body: {
                  name: text("name"),
                  upstream: text("upstream"),
                  ...(perMinute && daily ? { quota: { perMinute, daily } } : {}),
                  senderDomains: list(text("senderDomains")),
                  ...(number("maxRecipients") ? { maxRecipients: number("maxRecipients") } : {}),
                },
              });
              form.reset();
              setCreated(project);
              await projects.reload();
            } catch (failure) {
              setError(failure as Error);
            }
          }}
        >
          <Field label="Name">
            <input name="name" type="text" required />
          </Field>
          <Field label="Upstream" hint="smtp://[user:pass@]host:port or smtps://…">
            <input name="upstream" type="text" required placeholder="smtp://smtp.example.net:587" />
          </Field>
          <Field label="Quota per minute">
            <input name="perMinute" type="number" min={1} />
          </Field>
          <Field label="Quota per day">
            <input name="daily" type="number" min={1} />
          </Field>
          <Field label="Sender domains" hint="comma-separated; empty: any">
            <input name="senderDomains" type="text" />
          </Field>
          <Field label="Most recipients per message">
            <input name="maxRecipients" type="number" min={1} />
          </Field>
          <button type="submit">Create project</button>
          {error ? <ErrorNote error={error} /> : null}
        </form>
      </details>
      <Loaded resource={projects}>
        {(page) =>
          page.items.length === 0 ? (
            <Empty>No projects yet.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Status</th>
                  <th scope="col">Upstream</th>
                  <th scope="col">Quota</th>
                  <th scope="col">Created</th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {page.items.map((project) => (
                  <tr key={project.id} data-project={project.name}>
                    <td>
                      <Link href={`/projects/${project.id}`}>{project.name}</Link>
                    </td>
                    <td>
                      <StatusBadge status={project.status} />
                    </td>
                    <td>
                      <code>{project.upstream}</code>
                    </td>
                    <td>
                      {project.quota.perMinute}/min, {project.quota.daily}/day
                    </td>
                    <td>
                      <Time iso={project.createdAt} />
                    </td>
                    <td>
                      <span class="row-actions">
                        <ActionButton
                          label={project.status === "active" ? "Suspend" : "Resume"}
                          run={async () => {
                            await api(`/admin/projects/${project.id}`, {
                              method: "PATCH",
                              body: { status: project.status === "active" ? "suspended" : "active" },
                            });
                            await projects.reload();
                          }}
                        />
                        <ActionButton
                          label="Delete"
                          danger
                          confirm={`Delete project ${project.name}, its messages, credentials and tokens?`}
                          run={async () => {
                            await api(`/admin/projects/${project.id}`, { method: "DELETE" });
                            await projects.reload();
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
    </>
  );
}
