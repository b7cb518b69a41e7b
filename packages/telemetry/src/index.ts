export { createLogger, type Logger, redactedPaths } from "./logger";
export { createMetricsRegistry, type Registry } from "./metrics";
