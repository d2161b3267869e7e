import { type KeyObject, sign, verify } from 'node:crypto';
import { OssifyError } from '../util/errors.ts';
import { keyId } from './keys.ts';

/**
 * DSSE (Dead Simple Signing Envelope) v1, the envelope in-toto attestations travel in. The
 * signature covers the pre-authentication encoding of type and body, never the JSON around
 * them, so re-serialising the envelope cannot change what was signed.
 */

export const DSSE_MEDIA_TYPE = 'application/vnd.dsse.envelope.v1+json';
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

export interface Envelope {
  payloadType: string;
  /** base64 of the body. */
  payload: string;
  signatures: { keyid: string; sig: string }[];
}

/** PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes as decimal. */
export function pae(payloadType: string, body: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${body.length} `), body]);
}

/** ECDSA P-256 / SHA-256, DER signatures: what cosign's attest writes. */
export function signEnvelope(key: KeyObject, payloadType: string, body: Uint8Array): Envelope {
  const sig = sign('sha256', pae(payloadType, body), { key, dsaEncoding: 'der' });
  return { payloadType, payload: Buffer.from(body).toString('base64'), signatures: [{ keyid: keyId(key), sig: sig.toString('base64') }] };
}

export function parseEnvelope(bytes: Uint8Array, origin: string): Envelope {
  let e: Envelope;
  try {
    e = JSON.parse(new TextDecoder().decode(bytes)) as Envelope;
  } catch (err) {
    throw new OssifyError(`${origin} is not a DSSE envelope (not JSON)`, { cause: err });
  }
  if (typeof e?.payloadType !== 'string' || typeof e.payload !== 'string' || !Array.isArray(e.signatures)) {
    throw new OssifyError(`${origin} is not a DSSE envelope`);
  }
  return e;
}

/** The body, when one of the envelope's signatures verifies with `key`; throws otherwise. */
export function verifyEnvelope(e: Envelope, key: KeyObject, origin: string): Buffer {
  const body = Buffer.from(e.payload, 'base64');
  const msg = pae(e.payloadType, body);
  for (const s of e.signatures) {
    if (typeof s?.sig !== 'string') continue;
    try {
      if (verify('sha256', msg, { key, dsaEncoding: 'der' }, Buffer.from(s.sig, 'base64'))) return body;
    } catch {
      // a malformed signature is just not a valid one
    }
  }
  throw new OssifyError(`${origin}: no signature of the envelope verifies with the given key`);
}
