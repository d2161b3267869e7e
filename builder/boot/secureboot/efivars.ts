import { X509Certificate } from 'node:crypto';
import { guidToBytes } from '../../util/guid.ts';
import { InputError } from '../../util/errors.ts';
import { concatBytes } from './der.ts';
import { OID, signedData, type Signer } from './pkcs7.ts';

/**
 * UEFI Secure Boot variable payloads (UEFI 2.10 §8.2.2 and §32.4): EFI_SIGNATURE_LISTs of
 * X.509 certificates, wrapped in EFI_VARIABLE_AUTHENTICATION_2 descriptors — the `.auth`
 * files `sbsiglist` + `sbvarsign` (or efitools' cert-to-efi-sig-list + sign-efi-sig-list)
 * produce, and what systemd-boot enrolls from `loader/keys/auto/{PK,KEK,db}.auth`.
 *
 * The descriptor's timestamp is an input (SOURCE_DATE_EPOCH), not the clock, so the files are
 * reproducible. Firmware only requires that a later update carries a later timestamp.
 */

export const EFI_GLOBAL_VARIABLE_GUID = '8BE4DF61-93CA-11D2-AA0D-00E098032B8C';
export const EFI_IMAGE_SECURITY_DATABASE_GUID = 'D719B2CB-3D3A-4596-A3BC-DAD00E67656F';
export const EFI_CERT_X509_GUID = 'A5C059A1-94E4-4AA7-87B5-AB155C2BF072';
export const EFI_CERT_TYPE_PKCS7_GUID = '4AAFD29D-68DF-49EE-8AA9-347D375665A7';

export const EFI_VARIABLE_NON_VOLATILE = 0x01;
export const EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x02;
export const EFI_VARIABLE_RUNTIME_ACCESS = 0x04;
export const EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20;
export const EFI_VARIABLE_APPEND_WRITE = 0x40;
/** What PK, KEK and db are written with (systemd-boot's enrollment uses exactly these). */
export const SECURE_BOOT_VARIABLE_ATTRIBUTES =
  EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

const WIN_CERT_REVISION_2_0 = 0x0200;
const WIN_CERT_TYPE_EFI_GUID = 0x0ef1;

export type SecureBootVariable = 'PK' | 'KEK' | 'db' | 'dbx';

export function vendorGuidOf(name: SecureBootVariable): string {
  return name === 'PK' || name === 'KEK' ? EFI_GLOBAL_VARIABLE_GUID : EFI_IMAGE_SECURITY_DATABASE_GUID;
}

function certDer(cert: Uint8Array | string): Uint8Array {
  try {
    return new Uint8Array(new X509Certificate(typeof cert === 'string' ? cert : Buffer.from(cert)).raw);
  } catch (err) {
    throw new InputError('EFI signature list: not an X.509 certificate (PEM or DER)', { cause: err });
  }
}

/**
 * One EFI_SIGNATURE_LIST per certificate: a list's entries must all be the same size, and
 * certificates rarely are. `owner` is the SignatureOwner GUID (who enrolled it).
 */
export function efiSignatureList(certs: Array<Uint8Array | string>, owner: string): Uint8Array {
  const ownerBytes = guidToBytes(owner);
  const lists = certs.map((c) => {
    const der = certDer(c);
    const sigSize = 16 + der.length;
    const out = new Uint8Array(28 + sigSize);
    const dv = new DataView(out.buffer);
    out.set(guidToBytes(EFI_CERT_X509_GUID), 0);
    dv.setUint32(16, out.length, true); // SignatureListSize
    dv.setUint32(20, 0, true); // SignatureHeaderSize
    dv.setUint32(24, sigSize, true); // SignatureSize
    out.set(ownerBytes, 28);
    out.set(der, 44);
    return out;
  });
  return concatBytes(lists);
}

/** EFI_TIME for a Unix time, UTC, whole seconds; Pad/Nanosecond/TimeZone/Daylight zero as §8.2.2 demands. */
export function efiTime(epochSeconds: number): Uint8Array {
  if (!Number.isInteger(epochSeconds) || epochSeconds < 0) throw new InputError(`EFI time: ${epochSeconds} is not a non-negative whole number of seconds`);
  const d = new Date(epochSeconds * 1000);
  const out = new Uint8Array(16);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, d.getUTCFullYear(), true);
  out[2] = d.getUTCMonth() + 1;
  out[3] = d.getUTCDate();
  out[4] = d.getUTCHours();
  out[5] = d.getUTCMinutes();
  out[6] = d.getUTCSeconds();
  return out;
}

export interface SignVariableOptions {
  name: string;
  vendorGuid: string;
  /** Default SECURE_BOOT_VARIABLE_ATTRIBUTES. */
  attributes?: number;
  /** The variable's new value, e.g. an EFI signature list. */
  data: Uint8Array;
  signer: Signer;
  /** Unix seconds for the descriptor's TimeStamp (e.g. SOURCE_DATE_EPOCH). */
  timestamp: number;
}

/**
 * EFI_VARIABLE_AUTHENTICATION_2 followed by the data: the whole `.auth` file. The signature
 * is a detached PKCS #7 SignedData (without the ContentInfo wrapper, as the spec and
 * sbvarsign have it) over VariableName ‖ VendorGuid ‖ Attributes ‖ TimeStamp ‖ Data.
 */
export function signEfiVariable(o: SignVariableOptions): Uint8Array {
  const attributes = o.attributes ?? SECURE_BOOT_VARIABLE_ATTRIBUTES;
  const time = efiTime(o.timestamp);
  const attrBytes = new Uint8Array(4);
  new DataView(attrBytes.buffer).setUint32(0, attributes, true);
  const signed = concatBytes([Buffer.from(o.name, 'utf16le'), guidToBytes(o.vendorGuid), attrBytes, time, o.data]);
  const p7 = signedData({ signer: o.signer, contentType: OID.data, digestedBytes: signed });
  const auth = new Uint8Array(16 + 24 + p7.length);
  const dv = new DataView(auth.buffer);
  auth.set(time, 0);
  dv.setUint32(16, 24 + p7.length, true); // WIN_CERTIFICATE_UEFI_GUID.Hdr.dwLength: header + CertType + CertData
  dv.setUint16(20, WIN_CERT_REVISION_2_0, true);
  dv.setUint16(22, WIN_CERT_TYPE_EFI_GUID, true);
  auth.set(guidToBytes(EFI_CERT_TYPE_PKCS7_GUID), 24);
  auth.set(p7, 40);
  return concatBytes([auth, o.data]);
}

export interface ParsedAuthVariable {
  timestamp: Uint8Array;
  certType: string;
  /** PKCS #7 SignedData DER. */
  signature: Uint8Array;
  data: Uint8Array;
}

export function parseAuthVariable(bytes: Uint8Array): ParsedAuthVariable {
  if (bytes.length < 40) throw new InputError('.auth: shorter than EFI_VARIABLE_AUTHENTICATION_2');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = dv.getUint32(16, true);
  if (dv.getUint16(20, true) !== WIN_CERT_REVISION_2_0 || dv.getUint16(22, true) !== WIN_CERT_TYPE_EFI_GUID || len < 24 || 16 + len > bytes.length) {
    throw new InputError('.auth: not a WIN_CERTIFICATE_UEFI_GUID descriptor');
  }
  const g = Buffer.from(bytes.subarray(24, 40));
  const certType = [g.readUInt32LE(0).toString(16).padStart(8, '0'), g.readUInt16LE(4).toString(16).padStart(4, '0'), g.readUInt16LE(6).toString(16).padStart(4, '0'), g.toString('hex', 8, 10), g.toString('hex', 10, 16)].join('-').toUpperCase();
  return { timestamp: bytes.subarray(0, 16), certType, signature: bytes.subarray(40, 16 + len), data: bytes.subarray(16 + len) };
}

export interface AuthFilesOptions {
  PK: Signer;
  KEK: Signer;
  /** Certificates to enroll in db (the db signer's, typically); DER or PEM. */
  db: Array<Uint8Array | string>;
  /** SignatureOwner GUID, e.g. derivedGuid(profileDigest, 'secure-boot-owner'). */
  owner: string;
  /** Unix seconds (SOURCE_DATE_EPOCH). */
  timestamp: number;
}

/**
 * The three files for `loader/keys/auto/`: PK signed by itself, KEK by PK, db by KEK — the
 * chain firmware checks once PK exists (systemd-boot writes db, then KEK, then PK).
 */
export function secureBootAuthFiles(o: AuthFilesOptions): Record<'PK' | 'KEK' | 'db', Uint8Array> {
  const file = (name: SecureBootVariable, data: Uint8Array, signer: Signer) =>
    signEfiVariable({ name, vendorGuid: vendorGuidOf(name), data, signer, timestamp: o.timestamp });
  return {
    PK: file('PK', efiSignatureList([o.PK.cert], o.owner), o.PK),
    KEK: file('KEK', efiSignatureList([o.KEK.cert], o.owner), o.PK),
    db: file('db', efiSignatureList(o.db, o.owner), o.KEK),
  };
}

/** The X.509 certificates (DER) an EFI_SIGNATURE_LIST sequence holds; other signature types are skipped. */
export function signatureListCertificates(esl: Uint8Array): Uint8Array[] {
  const dv = new DataView(esl.buffer, esl.byteOffset, esl.byteLength);
  const x509 = guidToBytes(EFI_CERT_X509_GUID);
  const out: Uint8Array[] = [];
  for (let at = 0; at + 28 <= esl.length; ) {
    const listSize = dv.getUint32(at + 16, true);
    const headerSize = dv.getUint32(at + 20, true);
    const sigSize = dv.getUint32(at + 24, true);
    if (listSize < 28 || at + listSize > esl.length || sigSize < 16) throw new InputError('EFI signature list: malformed');
    if (Buffer.from(esl.subarray(at, at + 16)).equals(Buffer.from(x509))) {
      for (let s = at + 28 + headerSize; s + sigSize <= at + listSize; s += sigSize) out.push(esl.subarray(s + 16, s + sigSize));
    }
    at += listSize;
  }
  return out;
}
