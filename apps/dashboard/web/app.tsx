import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Link, Redirect, Route, Router, Switch, useRoute } from "wouter-preact";
import { useHashLocation } from "wouter-preact/use-hash-location";
import { api, type Project, type Session, whenSignedOut } from "./api";
import { useResource, useTitle } from "./hooks";
import { AuditLog } from "./pages/audit";
import { Credentials } from "./pages/credentials";
import { Domains } from "./pages/domains";
import { Holds } from "./pages/holds";
import { MessageView } from "./pages/message";
import { Messages } from "./pages/messages";
import { Overview } from "./pages/overview";
import { Projects } from "./pages/projects";
import { Rules } from "./pages/rules";
import { Suppressions } from "./pages/suppressions";
import { System } from "./pages/system";
import { Webhooks } from "./pages/webhooks";
import { projectScope, ScopeContext, useScope } from "./scope";
import { ErrorNote, Field, Loading, StatusBadge } from "./ui";

/**
 * The dashboard: sign-in, then the pages of a project (its own session) or of the operator
 * (projects, system health, the whole audit log, and any project's pages under /projects/:id).
 * Routes live in the URL's fragment (`#/messages/…`), so the server serves one page and every
 * other path stays the API's.
 */
export function App() {
  // undefined: not known yet; null: signed out.
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  useEffect(() => {
    whenSignedOut(() => setSession(null));
    api<Session>("/session").then(setSession, () => setSession(null));
  }, []);
  if (session === undefined) return <Loading />;
  if (session === null) return <SignIn onSignedIn={setSession} />;
  return (
    <Router hook={useHashLocation}>
      <Shell session={session} onSignedOut={() => setSession(null)} />
    </Router>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  useTitle("Sign in");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  return (
    <main class="sign-in">
      <h1>Postern</h1>
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          const form = event.currentTarget as HTMLFormElement;
          const input = form.elements.namedItem("token") as HTMLInputElement;
          setBusy(true);
          setError(undefined);
          try {
            // The token goes to the server once, for a session cookie; this page keeps no copy.
            const session = await api<Session>("/session", { method: "POST", body: { token: input.value } });
            input.value = "";
            onSignedIn(session);
          } catch (failure) {
            setError(failure as Error);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field
          label="API token or operator token"
          hint="A project's API token shows that project; the operator token (ADMIN_TOKEN) shows every project."
        >
          <input name="token" type="password" autocomplete="off" required spellcheck={false} />
        </Field>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error ? <ErrorNote error={error} /> : null}
      </form>
    </main>
  );
}

function NavLink({ href, children }: { href: string; children: ComponentChildren }) {
  const [exact] = useRoute(href);
  const [below] = useRoute(`${href === "/" ? "" : href}/*`);
  const active = exact || (href !== "/" && below);
  return (
    <Link href={href} aria-current={active ? "page" : undefined}>
      {children}
    </Link>
  );
}

function Shell({ session, onSignedOut }: { session: Session; onSignedOut: () => void }) {
  return (
    <>
      <button type="button" class="skip" onClick={() => document.getElementById("main")?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <span class="brand">Postern</span>
        {session.kind === "operator" ? (
          <nav aria-label="Operator" class="top-nav">
            <NavLink href="/projects">Projects</NavLink>
            <NavLink href="/system">System</NavLink>
            <NavLink href="/audit">Audit log</NavLink>
          </nav>
        ) : null}
        <span class="who">{session.kind === "operator" ? "Operator" : "Project"}</span>
        <button
          type="button"
          onClick={async () => {
            await api("/session", { method: "DELETE" }).catch(() => undefined);
            onSignedOut();
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {session.kind === "operator" ? <OperatorPages /> : <OwnProject projectId={session.projectId ?? ""} />}
      </main>
    </>
  );
}

function OwnProject({ projectId }: { projectId: string }) {
  return (
    <ScopeContext.Provider value={projectScope(projectId, false)}>
      <ProjectPages />
    </ScopeContext.Provider>
  );
}

function OperatorPages() {
  return (
    <Switch>
      <Route path="/">
        <Redirect to="/projects" />
      </Route>
      <Route path="/projects" component={Projects} />
      <Route path="/system" component={System} />
      <Route path="/audit">
        <AuditLog
          page={(cursor) => `/admin/audit-logs${cursor ? `?cursor=${cursor}` : ""}`}
          stream="/admin/audit-logs/stream"
        />
      </Route>
      <Route path="/projects/:projectId" nest>
        {(params: { projectId: string }) => (
          <ScopeContext.Provider value={projectScope(params.projectId, true)}>
            <ProjectPages />
          </ScopeContext.Provider>
        )}
      </Route>
      <Route>
        <NotFound />
      </Route>
    </Switch>
  );
}

/** A project's pages, the same for its own session and for the operator drilling in. */
function ProjectPages() {
  const scope = useScope();
  const project = useResource<Project>(scope.operator ? `/admin/projects/${scope.projectId}` : "/v1/project");
  return (
    <>
      <div class="project-head">
        {scope.operator ? (
          <Link href="~/projects" class="back">
            ← Projects
          </Link>
        ) : null}
        <span class="project-name">
          {project.data ? (
            <>
              {project.data.name} <StatusBadge status={project.data.status} />
              {project.data.mode === "sandbox" ? <StatusBadge status="sandbox" /> : null}
            </>
          ) : project.error ? (
            <ErrorNote error={project.error} />
          ) : (
            "…"
          )}
        </span>
      </div>
      <nav aria-label="Project" class="tabs">
        <NavLink href="/">Overview</NavLink>
        <NavLink href="/messages">Messages</NavLink>
        <NavLink href="/holds">Hold queue</NavLink>
        <NavLink href="/suppressions">Suppressions</NavLink>
        <NavLink href="/webhooks">Webhooks</NavLink>
        <NavLink href="/domains">Domains</NavLink>
        <NavLink href="/rules">Rules</NavLink>
        <NavLink href="/credentials">Credentials and tokens</NavLink>
        <NavLink href="/audit">Audit log</NavLink>
      </nav>
      <Switch>
        <Route path="/" component={Overview} />
        <Route path="/messages" component={Messages} />
        <Route path="/messages/:id">{(params: { id: string }) => <MessageView id={params.id} />}</Route>
        <Route path="/holds" component={Holds} />
        <Route path="/suppressions" component={Suppressions} />
        <Route path="/webhooks" component={Webhooks} />
        <Route path="/domains" component={Domains} />
        <Route path="/rules" component={Rules} />
        <Route path="/credentials" component={Credentials} />
        <Route path="/audit">
          <AuditLog page={scope.auditPage} stream={scope.auditStream} />
        </Route>
        <Route>
          <NotFound />
        </Route>
      </Switch>
    </>
  );
}

function NotFound() {
  useTitle("Not found");
  return (
    <>
      <h1>Not found</h1>
      <p>
        There is no such page. <Link href="/">Back to the start</Link>
      </p>
    </>
  );
}
