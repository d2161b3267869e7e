import { type KeyObject, sign, verify } from 'node:crypto';
import { assertDigest, parseReference } from '../oci/reference.ts';
import { OssifyError } from '../util/errors.ts';

/**
 * cosign's "simple signing" payload and its signature: ECDSA P-256 over SHA-256 of the
 * payload bytes, ASN.1 DER, base64 in a layer annotation. This is the format skopeo's
 * `sigstoreSigned` policy verifies and `--sign-by-sigstore-private-key` writes.
 */

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
/** The artifactType cosign gives a signature pushed as an OCI 1.1 referrer. */
export const SIGNATURE_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const SIGNATURE_TYPE = 'cosign container image signature';

export interface SimpleSigningPayload {
  manifestDigest: string;
  /** The signed identity: a repository (cosign's choice), or a tagged or digested reference (skopeo's default). */
  dockerReference: string;
  creator?: string;
  timestamp?: number;
}

/**
 * The payload bytes. No timestamp unless asked: the same image signed twice by the same key
 * yields the same payload, so an existing signature can be recognised and not duplicated.
 */
export function encodePayload(p: SimpleSigningPayload): Uint8Array {
  assertDigest(p.manifestDigest, 'signed manifest digest');
  const optional: Record<string, unknown> = {};
  if (p.creator !== undefined) optional.creator = p.creator;
  if (p.timestamp !== undefined) optional.timestamp = p.timestamp;
  return new TextEncoder().encode(
    JSON.stringify({
      critical: {
        identity: { 'docker-reference': p.dockerReference },
        image: { 'docker-manifest-digest': p.manifestDigest },
        type: SIGNATURE_TYPE,
      },
      optional,
    }),
  );
}

export class InvalidSignatureError extends OssifyError {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidSignatureError';
  }
}

function exactObject(v: unknown, keys: string[], where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidSignatureError(`${where} is not a JSON object`);
  const have = Object.keys(v).sort();
  const want = [...keys].sort();
  if (have.join('\0') !== want.join('\0')) throw new InvalidSignatureError(`${where} has fields ${JSON.stringify(have)}, expected exactly ${JSON.stringify(want)}`);
  return v as Record<string, unknown>;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string') throw new InvalidSignatureError(`${where} is not a string`);
  return v;
}

/** Parses a payload as strictly as containers/image does: exactly the critical fields, nothing unknown in them. */
export function parsePayload(bytes: Uint8Array): SimpleSigningPayload {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new InvalidSignatureError('the signature payload is not JSON');
  }
  const top = exactObject(raw, ['critical', 'optional'], 'payload');
  const critical = exactObject(top.critical, ['type', 'image', 'identity'], 'payload.critical');
  if (critical.type !== SIGNATURE_TYPE) throw new InvalidSignatureError(`unrecognised signature type ${JSON.stringify(critical.type)}`);
  const image = exactObject(critical.image, ['docker-manifest-digest'], 'payload.critical.image');
  const identity = exactObject(critical.identity, ['docker-reference'], 'payload.critical.identity');
  const out: SimpleSigningPayload = {
    manifestDigest: str(image['docker-manifest-digest'], 'docker-manifest-digest'),
    dockerReference: str(identity['docker-reference'], 'docker-reference'),
  };
  // cosign writes "optional": null when there is nothing optional
  if (top.optional !== null) {
    if (typeof top.optional !== 'object' || Array.isArray(top.optional)) throw new InvalidSignatureError('payload.optional is not an object');
    const o = top.optional as Record<string, unknown>;
    if (o.creator !== undefined) out.creator = str(o.creator, 'optional.creator');
    if (o.timestamp !== undefined) {
      if (!Number.isInteger(o.timestamp)) throw new InvalidSignatureError('optional.timestamp is not an integer');
      out.timestamp = o.timestamp as number;
    }
  }
  return out;
}

/** Base64 of the DER ECDSA signature over the payload bytes, as the annotation carries it. */
export function signPayload(key: KeyObject, payload: Uint8Array): string {
  return sign('sha256', payload, { key, dsaEncoding: 'der' }).toString('base64');
}

export function verifyPayloadSignature(key: KeyObject, payload: Uint8Array, base64Signature: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64Signature)) return false;
  try {
    return verify('sha256', payload, { key, dsaEncoding: 'der' }, Buffer.from(base64Signature, 'base64'));
  } catch {
    return false;
  }
}

/**
 * Checks what a cryptographically valid payload says: it must sign exactly `manifestDigest`,
 * and name the repository the image is read from (skopeo's matchRepoDigestOrExact for a
 * by-digest reference: any tag or digest of that repository).
 */
export function checkPayloadClaims(p: SimpleSigningPayload, expect: { manifestDigest: string; registry: string; repository: string }): void {
  if (p.manifestDigest !== expect.manifestDigest) {
    throw new InvalidSignatureError(`it signs manifest ${p.manifestDigest}, not ${expect.manifestDigest}`);
  }
  let signed;
  try {
    signed = parseReference(p.dockerReference);
  } catch {
    throw new InvalidSignatureError(`its identity ${JSON.stringify(p.dockerReference)} is not an image reference`);
  }
  if (signed.registry !== expect.registry || signed.repository !== expect.repository) {
    throw new InvalidSignatureError(`it names ${signed.registry}/${signed.repository}, not ${expect.registry}/${expect.repository}`);
  }
}
