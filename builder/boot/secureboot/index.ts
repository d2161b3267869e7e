export { generateKeyPair, generateSecureBootKeys, type KeyPair, type SecureBootKeys } from './keys.ts';
export { signPe, verifyPe, type SbsignOptions } from './sbsign.ts';
export { loadSigner, signedData, wrapContentInfo, OID, type Signer, type SignedDataOptions } from './pkcs7.ts';
export { authenticodeDigest, authenticodeSignature, signPeImage, readPeSignatures, peSigners, type EmbeddedSignature, type PeSigner } from './authenticode.ts';
export {
  efiSignatureList,
  efiTime,
  signEfiVariable,
  parseAuthVariable,
  signatureListCertificates,
  secureBootAuthFiles,
  vendorGuidOf,
  EFI_GLOBAL_VARIABLE_GUID,
  EFI_IMAGE_SECURITY_DATABASE_GUID,
  EFI_CERT_X509_GUID,
  EFI_CERT_TYPE_PKCS7_GUID,
  SECURE_BOOT_VARIABLE_ATTRIBUTES,
  type SecureBootVariable,
  type SignVariableOptions,
  type ParsedAuthVariable,
  type AuthFilesOptions,
} from './efivars.ts';
