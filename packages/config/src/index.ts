export {
  type Config,
  ConfigError,
  type ConfigWithSecrets,
  type EnvSource,
  loadConfig,
  type ResolvedConfig,
  resolveSecrets,
} from "./config";
export { type VariableName, type VariableSpec, variables } from "./schema";
