export {
  type ApiTokenHolder,
  type ApiTokenVerification,
  type ApiTokenVerifier,
  createApiTokenVerifier,
  type ProjectPolicyLookup,
} from "./api-token-verifier";
export { clientAddress } from "./client-address";
export { type AuthInvalidation, authInvalidationChannel, publishAuthInvalidation } from "./invalidation";
export {
  apiTokenPrefix,
  auditableUsername,
  bcryptCost,
  hashApiToken,
  type IssuedApiToken,
  type IssuedSmtpCredential,
  issueApiToken,
  issueSmtpCredential,
  smtpKeyPrefix,
  smtpSecretPrefix,
} from "./keys";
export { type ProjectPolicy, projectPolicySelect } from "./project-policy";
export { openSecret, sealSecret } from "./secretbox";
export {
  type AuthenticatedClient,
  type CredentialVerifier,
  type CredentialVerifierOptions,
  type CurrentStanding,
  createCredentialVerifier,
  type VerificationOutcome,
} from "./verifier";
