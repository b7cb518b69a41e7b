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
export { projectInputSchema, projectName, projectPatchSchema } from "./schemas";
export { type ProjectView, projectDetailView, projectSettingsView, projectView } from "./views";
