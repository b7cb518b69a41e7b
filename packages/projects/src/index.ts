export { unusableLocalAddress } from "./local-addresses";
export {
  type Actor,
  type CreateProjectResult,
  createProjectService,
  type DeleteProjectResult,
  type IssuedCredential,
  type IssuedToken,
  type ProjectInput,
  type ProjectPatch,
  type ProjectService,
  type ProjectServiceDeps,
  projectDefaults,
  type RevokeResult,
  type UpdateProjectResult,
} from "./projects";
export {
  type CompiledRoutes,
  compileRoutes,
  createRouteService,
  openRouteUrls,
  type ReplaceRoutesResult,
  RouteBook,
  type RouteService,
  type RoutesInput,
  type RoutesView,
  type RouteTarget,
  routeFor,
  routesInputSchema,
  type StoredRoute,
} from "./routes";
export { domainName, projectInputSchema, projectName, projectPatchSchema } from "./schemas";
export {
  createSuppressionService,
  pruneExpiredSuppressions,
  SuppressionBook,
  type SuppressionEntry,
  type SuppressionInput,
  type SuppressionReason,
  type SuppressionService,
  type SuppressionServiceDeps,
  type SuppressionVerdict,
  type SuppressionView,
  suppressionAddress,
  suppressionInputSchema,
  suppressionReasons,
  suppressRecipient,
} from "./suppressions";
export { type ProjectView, projectDetailView, projectSettingsView, projectView } from "./views";
