import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ANNOTATION, type Descriptor } from '../oci/media-types.ts';
import { repoName } from '../oci/reference.ts';
import { listReferrers, pushReferrer, readArtifact } from '../oci/referrers.ts';
import type { RegistryClient } from '../oci/registry.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { appendAttachment, readAttachments } from './attachments.ts';
import { DSSE_MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE, type Envelope, parseEnvelope, signEnvelope, verifyEnvelope } from './dsse.ts';
import { INSTALLER_SUBJECT, PROVENANCE_FILE, SLSA_PROVENANCE_V1, type Statement, parseStatement, subjectDigest } from './provenance.ts';
import { SBOM_FILE, SPDX_MEDIA_TYPE } from './sbom.ts';
import { digestReference } from './signatures.ts';

/**
 * What travels with a pushed image besides its signature: the SBOM (an SPDX referrer
 * artifact) and the signed provenance (a DSSE envelope around the in-toto statement, as a
 * referrer and under cosign's `.att` tag). The provenance names the SBOM's sha256, so a
 * verified provenance vouches for the SBOM too.
 */

const PREDICATE_ANNOTATION = 'in-toto.io/predicate-type';

async function subjectDescriptor(client: RegistryClient, ref: { repository: string; digest: string }): Promise<Descriptor> {
  const m = await client.getManifest(ref.repository, ref.digest);
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
}

/** Attaches an SPDX document to the image as a referrer (idempotent: same bytes, same artifact). */
export async function attachSbom(client: RegistryClient, refStr: string, sbom: Uint8Array): Promise<string> {
  const ref = digestReference(refStr);
  let created: string | undefined;
  try {
    created = (JSON.parse(new TextDecoder().decode(sbom)) as { creationInfo?: { created?: string } }).creationInfo?.created;
  } catch (err) {
    throw new InputError('the SBOM is not JSON', { cause: err });
  }
  const r = await pushReferrer(
    client,
    ref.repository,
    await subjectDescriptor(client, ref),
    SPDX_MEDIA_TYPE,
    [{ mediaType: SPDX_MEDIA_TYPE, bytes: sbom, annotations: { [ANNOTATION.title]: SBOM_FILE } }],
    created !== undefined ? { [ANNOTATION.created]: created } : undefined,
  );
  return r.digest;
}

function envelopeOf(bytes: Uint8Array): Envelope | undefined {
  try {
    return parseEnvelope(bytes, 'attestation');
  } catch {
    return undefined;
  }
}

const signsSameStatement = (bytes: Uint8Array, statement: Uint8Array, key: KeyObject) => {
  const e = envelopeOf(bytes);
  if (!e || e.payloadType !== IN_TOTO_PAYLOAD_TYPE) return false;
  try {
    return verifyEnvelope(e, key, 'attestation').equals(statement);
  } catch {
    return false;
  }
};

/**
 * Signs the provenance statement with the image's key and attaches it. Refuses a statement
 * about another image: the installer digest it names must be the one signed.
 */
export async function attestProvenance(client: RegistryClient, refStr: string, key: KeyObject, statement: Uint8Array): Promise<{ referrer: string; att: 'added' | 'exists' }> {
  const ref = digestReference(refStr);
  const s = parseStatement(statement, 'the provenance');
  const about = subjectDigest(s, INSTALLER_SUBJECT);
  if (`sha256:${about}` !== ref.digest) {
    throw new InputError(`the provenance is about installer image sha256:${about}, not ${ref.digest}`, { hint: 'pass the build output the pushed image was made from' });
  }
  const annotations = { [PREDICATE_ANNOTATION]: s.predicateType };
  const existing = (await readAttachments(client, ref.repository, ref.digest, 'att', DSSE_MEDIA_TYPE)).find((l) => signsSameStatement(l.payload, statement, key));
  const envelope = existing ? existing.payload : new TextEncoder().encode(JSON.stringify(signEnvelope(key, IN_TOTO_PAYLOAD_TYPE, statement)));
  const att = existing ? 'exists' : await appendAttachment(client, ref.repository, ref.digest, 'att', { mediaType: DSSE_MEDIA_TYPE, payload: envelope, annotations });
  const r = await pushReferrer(client, ref.repository, await subjectDescriptor(client, ref), DSSE_MEDIA_TYPE, [{ mediaType: DSSE_MEDIA_TYPE, bytes: envelope, annotations }], annotations);
  return { referrer: r.digest, att };
}

async function readOutputFile(outDir: string, name: string): Promise<Buffer> {
  try {
    return await readFile(join(outDir, name));
  } catch (err) {
    throw new InputError(`${outDir} has no ${name}`, { cause: err, hint: 'pass a build output of this ossify version (out/<name>-<version>/)' });
  }
}

export interface AttachResult {
  sbom: string;
  provenance?: { referrer: string; att: 'added' | 'exists' };
}

/**
 * Attaches a build output's SBOM to its pushed image, and with a key its signed provenance.
 * The output must be the one the image was made from (its provenance names that digest).
 */
export async function attachBuildOutput(client: RegistryClient, refStr: string, outDir: string, key?: KeyObject): Promise<AttachResult> {
  const ref = digestReference(refStr);
  const statement = await readOutputFile(outDir, PROVENANCE_FILE);
  const sbom = await readOutputFile(outDir, SBOM_FILE);
  const s = parseStatement(statement, join(outDir, PROVENANCE_FILE));
  if (`sha256:${subjectDigest(s, INSTALLER_SUBJECT)}` !== ref.digest) {
    throw new InputError(`${outDir} is the build of installer image sha256:${subjectDigest(s, INSTALLER_SUBJECT)}, not of ${repoName(ref)}@${ref.digest}`);
  }
  if (subjectDigest(s, SBOM_FILE) !== sha256Hex(sbom)) throw new OssifyError(`${outDir}/${SBOM_FILE} is not the SBOM its provenance names: the build output was modified`);
  const result: AttachResult = { sbom: await attachSbom(client, refStr, sbom) };
  if (key) result.provenance = await attestProvenance(client, refStr, key, statement);
  return result;
}

export interface VerifiedAttestations {
  statement: Statement;
  /** Digest of the SBOM referrer manifest whose document the provenance names. */
  sbomArtifact: string;
}

/**
 * Finds a provenance attestation signed by `key` about exactly this image, and an attached
 * SBOM whose bytes are the ones that provenance names. Throws when either is missing.
 */
export async function verifyAttestations(client: RegistryClient, refStr: string, key: KeyObject): Promise<VerifiedAttestations> {
  const ref = digestReference(refStr);
  const name = `${repoName(ref)}@${ref.digest}`;
  const why: string[] = [];
  let statement: Statement | undefined;
  for (const d of (await listReferrers(client, ref.repository, ref.digest, DSSE_MEDIA_TYPE)).descriptors) {
    const art = await readArtifact(client, ref.repository, d, ref.digest);
    for (const l of art.layers) {
      const at = `attestation ${d.digest.slice(0, 19)}…`;
      const e = envelopeOf(await client.fetchBlobBytes(ref.repository, l, 16 << 20));
      if (!e || e.payloadType !== IN_TOTO_PAYLOAD_TYPE) {
        why.push(`${at}: not an in-toto DSSE envelope`);
        continue;
      }
      try {
        const s = parseStatement(verifyEnvelope(e, key, at), at);
        if (s.predicateType !== SLSA_PROVENANCE_V1) why.push(`${at}: predicate ${s.predicateType}`);
        else if (`sha256:${subjectDigest(s, INSTALLER_SUBJECT)}` !== ref.digest) why.push(`${at}: about another image`);
        else statement ??= s;
      } catch (err) {
        why.push(err instanceof Error ? err.message : String(err));
      }
    }
  }
  if (!statement) throw new OssifyError(`${name} has no provenance signed by the given key${why.length ? `: ${why.join('; ')}` : ''}`, { hint: `attach it with: ossify sign ${name} --key cosign.key --build OUTDIR` });
  const want = subjectDigest(statement, SBOM_FILE);
  for (const d of (await listReferrers(client, ref.repository, ref.digest, SPDX_MEDIA_TYPE)).descriptors) {
    const art = await readArtifact(client, ref.repository, d, ref.digest);
    if (art.layers.some((l) => l.digest === `sha256:${want}`)) return { statement, sbomArtifact: d.digest };
  }
  throw new OssifyError(`${name} has no attached SBOM with the sha256 its provenance names (${want})`);
}
