/**
 * Exit codes of the operator commands, for scripts: 0 done; 1 Postern could not run the command
 * (configuration, database or Redis unavailable); 2 invalid usage or input; 3 no such project,
 * credential or token; 4 refused in the current state (e.g. deleting a project with pending mail).
 */
export const exitCodes = { ok: 0, unavailable: 1, usage: 2, notFound: 3, conflict: 4 } as const;
