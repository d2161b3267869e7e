import { createHash, createPrivateKey, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { InputError } from '../../util/errors.ts';
import {
  algorithmId,
  certificateIssuerAndSerial,
  explicit,
  implicitConstructed,
  integer,
  octetString,
  oid,
  sequence,
  setOf,
  type Der,
} from './der.ts';

/**
 * PKCS #7 / CMS SignedData (RFC 2315) with one RSA signer, SHA-256, and only the
 * authenticated attributes the verifiers need (contentType, messageDigest, plus any the
 * caller adds). No signingTime: RSA PKCS #1 v1.5 is deterministic, so without a clock in the
 * attributes the same inputs give the same signature bytes.
 */

export const OID = {
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  sha256: '2.16.840.1.101.3.4.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  spcIndirectDataContent: '1.3.6.1.4.1.311.2.1.4',
  spcPeImageData: '1.3.6.1.4.1.311.2.1.15',
  spcSpOpusInfo: '1.3.6.1.4.1.311.2.1.12',
} as const;

export interface Signer {
  key: KeyObject;
  /** DER. */
  cert: Uint8Array;
  /** Intermediate certificates (DER) to ship alongside the signer's. */
  chain?: Uint8Array[];
}

/** A signer from PEM (or DER) key and certificate bytes, e.g. the files keys.ts writes. */
export function loadSigner(key: string | Uint8Array, cert: string | Uint8Array): Signer {
  let keyObj: KeyObject;
  let certDer: Uint8Array;
  try {
    keyObj = createPrivateKey(typeof key === 'string' ? key : Buffer.from(key));
  } catch (err) {
    throw new InputError('Secure Boot: the signing key is not a PEM or DER private key', { cause: err });
  }
  try {
    certDer = new Uint8Array(new X509Certificate(typeof cert === 'string' ? cert : Buffer.from(cert)).raw);
  } catch (err) {
    throw new InputError('Secure Boot: the certificate is not a PEM or DER X.509 certificate', { cause: err });
  }
  if (keyObj.asymmetricKeyType !== 'rsa') {
    throw new InputError(`Secure Boot: the signing key is ${keyObj.asymmetricKeyType}; UEFI firmware verifies RSA (2048-bit) signatures`);
  }
  const x = new X509Certificate(Buffer.from(certDer));
  if (!x.checkPrivateKey(keyObj)) throw new InputError('Secure Boot: the signing key does not belong to the certificate');
  return { key: keyObj, cert: certDer };
}

export function attribute(type: string, ...values: Der[]): Der {
  return sequence(oid(type), setOf(...values));
}

export interface SignedDataOptions {
  signer: Signer;
  /** eContentType of the encapsulated content. */
  contentType: string;
  /** DER of the encapsulated content, or undefined for a detached signature. */
  content?: Der;
  /** The bytes the messageDigest attribute covers. */
  digestedBytes: Uint8Array;
  extraAttributes?: Der[];
}

/** The SignedData SEQUENCE (without the ContentInfo wrapper; see `wrapContentInfo`). */
export function signedData(o: SignedDataOptions): Der {
  const sha256 = algorithmId(OID.sha256);
  const digest = createHash('sha256').update(o.digestedBytes).digest();
  const attrs = [
    attribute(OID.contentType, oid(o.contentType)),
    attribute(OID.messageDigest, octetString(digest)),
    ...(o.extraAttributes ?? []),
  ];
  // The signature covers the attributes encoded as a SET (tag 0x31), not as the [0] that carries them.
  const attrSet = setOf(...attrs);
  const signature = sign('sha256', attrSet, o.signer.key);
  const { issuer, serial } = certificateIssuerAndSerial(o.signer.cert);
  const signerInfo = sequence(
    integer(1),
    sequence(issuer, serial),
    sha256,
    implicitConstructed(0, attrSet),
    algorithmId(OID.rsaEncryption),
    octetString(signature),
  );
  const encap = o.content === undefined ? sequence(oid(o.contentType)) : sequence(oid(o.contentType), explicit(0, o.content));
  return sequence(
    integer(1),
    setOf(sha256),
    encap,
    implicitConstructed(0, setOf(o.signer.cert, ...(o.signer.chain ?? []))),
    setOf(signerInfo),
  );
}

export function wrapContentInfo(signed: Der): Der {
  return sequence(oid(OID.signedData), explicit(0, signed));
}
