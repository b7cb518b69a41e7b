export { createTxtLookup, DnsLookupError, type TxtLookup } from "./dns";
export {
  type Actor,
  type CreateDomainResult,
  createDomainService,
  type DomainKeyView,
  type DomainService,
  type DomainView,
  dkimSelectors,
  type KeyInput,
  loadSigningKeys,
  type RotateResult,
  type VerifyResult,
} from "./domains";
export { type DkimAlgorithm, type DkimKeyPair, generateDkimKey, importDkimKey } from "./keys";
export { type CheckedRecord, type DnsRecord, dkimRecordName, type RecordState, recordsOf } from "./records";
export { dkimSignatureOf, type SigningKey } from "./signature";
export { createDkimSigner, type DkimSigner, type DkimSignerOptions, type PendingSignature } from "./signer";
