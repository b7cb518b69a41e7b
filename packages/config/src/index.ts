export {
  type Config,
  ConfigError,
  type ConfigWithSecrets,
  type EnvSource,
  loadConfig,
  type ResolvedConfig,
  resolveSecrets,
} from "./config";
export { configurationTable, withConfigurationTable } from "./docs";
export { type VariableName, type VariableSpec, variables } from "./schema";
