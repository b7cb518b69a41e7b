export {
  createLogger,
  type LogFormat,
  type Logger,
  logDestination,
  maskSecretLookalikes,
  redactedPaths,
} from "./logger";
export { createMetricsRegistry, type Registry } from "./metrics";
