export { createLogger, type Logger, maskSecretLookalikes, redactedPaths } from "./logger";
export { createMetricsRegistry, type Registry } from "./metrics";
