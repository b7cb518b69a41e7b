export { type CertificatePair, ensureDevCertificate, selfSignedCertificate } from "./certificate";
export { type EmbeddedPostgresOptions, type RunningService, startEmbeddedPostgres } from "./postgres";
export { freePort, freePorts } from "./process";
export { type EmbeddedRedisOptions, redisMissingMessage, startEmbeddedRedis } from "./redis";
export { provideServices, type Services } from "./services";
