import type { KeyObject } from 'node:crypto';
import type { Descriptor } from '../oci/media-types.ts';
import { type ImageRef, parseReference, repoName } from '../oci/reference.ts';
import { hasReferrersApi, listReferrers, pushReferrer, readArtifact } from '../oci/referrers.ts';
import { RegistryClient, type RegistryClientOptions } from '../oci/registry.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { packageInfo } from '../util/package-info.ts';
import { appendAttachment, readAttachments } from './attachments.ts';
import {
  InvalidSignatureError,
  SIGNATURE_ANNOTATION,
  SIGNATURE_ARTIFACT_TYPE,
  SIMPLE_SIGNING_MEDIA_TYPE,
  checkPayloadClaims,
  encodePayload,
  parsePayload,
  signPayload,
  verifyPayloadSignature,
} from './cosign.ts';
import { parsePublicKey } from './keys.ts';

/** A reference that names its image by digest: the only thing a signature can be about. */
export function digestReference(refStr: string): ImageRef & { digest: string } {
  const ref = parseReference(refStr);
  if (ref.digest === undefined) {
    throw new InputError(`${refStr} does not name a digest; signatures are about exact bytes`, { hint: 'use REPO@sha256:DIGEST (ossify push prints it)' });
  }
  return ref as ImageRef & { digest: string };
}

/** The image's manifest, read by digest (the client checks the bytes hash to it). */
async function subjectOf(client: RegistryClient, ref: ImageRef & { digest: string }): Promise<Descriptor> {
  const m = await client.getManifest(ref.repository, ref.digest);
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
}

export interface SignResult {
  reference: string;
  /** Whether a new signature was stored under the `.sig` tag (false: this key had signed it already). */
  added: boolean;
  /** The OCI 1.1 referrer form, pushed only when the registry has the referrers API. */
  referrer?: string;
}

/**
 * Signs an image the way cosign does: the simple-signing payload under `sha256-<hex>.sig`,
 * and, on a registry with the referrers API, the same layer as a referrer artifact.
 * The identity signed is the repository, like cosign's, so any tag of it verifies.
 */
export async function signImage(client: RegistryClient, refStr: string, key: KeyObject): Promise<SignResult> {
  const ref = digestReference(refStr);
  const subject = await subjectOf(client, ref);
  const payload = encodePayload({ manifestDigest: ref.digest, dockerReference: repoName(ref), creator: `ossify ${packageInfo().version}` });
  // ECDSA signatures differ each time; an existing one by this key over the same payload is reused.
  const existing = (await readAttachments(client, ref.repository, ref.digest, 'sig', SIMPLE_SIGNING_MEDIA_TYPE)).find(
    (l) => Buffer.from(l.payload).equals(payload) && verifyPayloadSignature(key, payload, l.descriptor.annotations?.[SIGNATURE_ANNOTATION] ?? ''),
  );
  const signature = existing?.descriptor.annotations?.[SIGNATURE_ANNOTATION] ?? signPayload(key, payload);
  const added = existing ? false : (await appendAttachment(client, ref.repository, ref.digest, 'sig', { mediaType: SIMPLE_SIGNING_MEDIA_TYPE, payload, annotations: { [SIGNATURE_ANNOTATION]: signature } })) === 'added';
  const result: SignResult = { reference: `${repoName(ref)}@${ref.digest}`, added };
  if (await hasReferrersApi(client, ref.repository, ref.digest)) {
    const r = await pushReferrer(client, ref.repository, subject, SIGNATURE_ARTIFACT_TYPE, [{ mediaType: SIMPLE_SIGNING_MEDIA_TYPE, bytes: payload, annotations: { [SIGNATURE_ANNOTATION]: signature } }]);
    result.referrer = r.digest;
  }
  return result;
}

export interface VerifiedSignature {
  /** Where it was found: the cosign `.sig` tag or a referrer artifact. */
  source: 'tag' | 'referrer';
  layerDigest: string;
  dockerReference: string;
  creator?: string;
}

interface Candidate {
  source: VerifiedSignature['source'];
  descriptor: Descriptor;
  payload: Uint8Array;
}

async function candidates(client: RegistryClient, ref: ImageRef & { digest: string }): Promise<Candidate[]> {
  const out: Candidate[] = (await readAttachments(client, ref.repository, ref.digest, 'sig')).map((l) => ({ source: 'tag', ...l }));
  const referrers = await listReferrers(client, ref.repository, ref.digest, SIGNATURE_ARTIFACT_TYPE);
  for (const d of referrers.descriptors) {
    const art = await readArtifact(client, ref.repository, d, ref.digest);
    for (const l of art.layers) out.push({ source: 'referrer', descriptor: l, payload: await client.fetchBlobBytes(ref.repository, l, 1 << 20) });
  }
  return out;
}

/**
 * Every signature of the image that `key` made over exactly this digest and repository.
 * Throws (exit 1) naming why each candidate failed when there is none.
 */
export async function verifySignatures(client: RegistryClient, refStr: string, key: KeyObject, keyName = 'the given key'): Promise<VerifiedSignature[]> {
  const ref = digestReference(refStr);
  // The image itself must be there and be these bytes; a signature of nothing is no release.
  await subjectOf(client, ref);
  const found = await candidates(client, ref);
  const valid: VerifiedSignature[] = [];
  const why: string[] = [];
  for (const c of found) {
    const at = `signature ${c.descriptor.digest.slice(0, 19)}…`;
    if (c.descriptor.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) {
      why.push(`${at}: media type ${c.descriptor.mediaType}`);
      continue;
    }
    if (!verifyPayloadSignature(key, c.payload, c.descriptor.annotations?.[SIGNATURE_ANNOTATION] ?? '')) {
      why.push(`${at}: not made by ${keyName}, or its payload was altered`);
      continue;
    }
    try {
      const p = parsePayload(c.payload);
      checkPayloadClaims(p, { manifestDigest: ref.digest, registry: ref.registry, repository: ref.repository });
      valid.push({ source: c.source, layerDigest: c.descriptor.digest, dockerReference: p.dockerReference, ...(p.creator !== undefined ? { creator: p.creator } : {}) });
    } catch (err) {
      if (!(err instanceof InvalidSignatureError)) throw err;
      why.push(`${at}: ${err.message}`);
    }
  }
  if (valid.length === 0) {
    const name = `${repoName(ref)}@${ref.digest}`;
    throw new OssifyError(found.length === 0 ? `${name} is not signed: no signature found` : `${name} has no valid signature by ${keyName}: ${why.join('; ')}`, {
      hint: found.length === 0 ? `sign it with: ossify sign ${name} --key cosign.key` : 'check that the public key is the one the release was signed with',
    });
  }
  return valid;
}

/**
 * For install/upgrade `--require-signature KEY`: resolves when `ref` (by digest) carries a
 * valid cosign signature by the PEM public key, throws an OssifyError otherwise.
 */
export async function verifyImageSignature(target: RegistryClient | RegistryClientOptions, ref: string, publicKeyPem: string): Promise<void> {
  const key = parsePublicKey(publicKeyPem, 'the required signature key');
  const own = !(target instanceof RegistryClient);
  const client = target instanceof RegistryClient ? target : await RegistryClient.create(digestReference(ref).registry, target);
  try {
    await verifySignatures(client, ref, key, 'the required key');
  } finally {
    if (own) await client.close();
  }
}
