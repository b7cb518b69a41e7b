import { createContext } from "preact";
import { useContext } from "preact/hooks";

/**
 * The project a page shows and where its API is: `/v1` for a project's own session, the same
 * routes under `/admin/projects/:id` for the operator drilling into one.
 */
export interface ProjectScope {
  projectId: string;
  /** Prefix of the project-scoped routes (messages, stats, rules, domains, suppressions). */
  api: string;
  operator: boolean;
  /** The audit log of this project, a page and the live stream. */
  auditPage: (cursor: string | null) => string;
  auditStream: string;
}

export function projectScope(projectId: string, operator: boolean): ProjectScope {
  if (!operator) {
    return {
      projectId,
      api: "/v1",
      operator,
      auditPage: (cursor) => `/v1/audit-logs${cursor ? `?cursor=${cursor}` : ""}`,
      auditStream: "/v1/audit-logs/stream",
    };
  }
  return {
    projectId,
    api: `/admin/projects/${projectId}`,
    operator,
    auditPage: (cursor) => `/admin/audit-logs?projectId=${projectId}${cursor ? `&cursor=${cursor}` : ""}`,
    auditStream: `/admin/audit-logs/stream?projectId=${projectId}`,
  };
}

export const ScopeContext = createContext<ProjectScope | null>(null);

export function useScope(): ProjectScope {
  const scope = useContext(ScopeContext);
  if (!scope) throw new Error("a project page outside a project");
  return scope;
}
