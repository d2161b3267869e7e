import { OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { encodeJson } from './layout.ts';
import { type Descriptor, type ImageIndex, MT } from './media-types.ts';
import { assertDigest } from './reference.ts';
import { RegistryError, type RegistryClient, bytesBlobSource } from './registry.ts';

/**
 * OCI 1.1 referrers: artifacts (SBOMs, signatures, attestations) are manifests whose `subject`
 * names the image they are about. A registry with the referrers API indexes them itself;
 * for one without (distribution 2.x), the image-spec's fallback is an image index stored
 * under the tag `<alg>-<hex>` of the subject, which every writer keeps up to date.
 */

/** The empty JSON config blob (`{}`) artifacts without a config point at. */
export const EMPTY_CONFIG: Descriptor = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
};
const EMPTY_BYTES = new TextEncoder().encode('{}');

export interface ArtifactManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType: string;
  config: Descriptor;
  layers: Descriptor[];
  subject: Descriptor;
  annotations?: Record<string, string>;
}

export interface ArtifactBlob {
  mediaType: string;
  bytes: Uint8Array;
  annotations?: Record<string, string>;
}

/** The fallback tag for a subject digest: `sha256:abc…` → `sha256-abc…`. */
export function referrersTag(digest: string): string {
  assertDigest(digest);
  return digest.replace(':', '-');
}

export function describeBytes(mediaType: string, bytes: Uint8Array, annotations?: Record<string, string>): Descriptor {
  return { mediaType, digest: `sha256:${sha256Hex(bytes)}`, size: bytes.length, ...(annotations ? { annotations } : {}) };
}

/** A manifest under a tag, or undefined when the tag does not exist. */
export async function getTaggedManifest(client: RegistryClient, repo: string, tag: string): Promise<{ bytes: Uint8Array; mediaType: string; digest: string } | undefined> {
  if (!(await client.statManifest(repo, tag))) return undefined;
  try {
    return await client.getManifest(repo, tag);
  } catch (err) {
    // deleted between HEAD and GET
    if (err instanceof RegistryError && err.status === 404) return undefined;
    throw err;
  }
}

export interface PushedReferrer {
  digest: string;
  descriptor: Descriptor;
  /** `api`: the registry indexes referrers itself; `tag`: we updated the fallback tag. */
  mode: 'api' | 'tag';
}

/** Pushes an artifact about `subject` and makes it findable as a referrer, by API or fallback tag. */
export async function pushReferrer(
  client: RegistryClient,
  repo: string,
  subject: Descriptor,
  artifactType: string,
  blobs: ArtifactBlob[],
  annotations?: Record<string, string>,
): Promise<PushedReferrer> {
  await client.pushBlob(repo, EMPTY_CONFIG, bytesBlobSource(EMPTY_BYTES));
  const layers: Descriptor[] = [];
  for (const b of blobs) {
    const d = describeBytes(b.mediaType, b.bytes, b.annotations);
    await client.pushBlob(repo, d, bytesBlobSource(b.bytes));
    layers.push(d);
  }
  const manifest: ArtifactManifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    artifactType,
    config: EMPTY_CONFIG,
    layers,
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    ...(annotations ? { annotations } : {}),
  };
  const bytes = encodeJson(manifest);
  const digest = `sha256:${sha256Hex(bytes)}`;
  const { subjectProcessed } = await client.putManifestWithSubject(repo, digest, bytes, MT.manifest);
  const descriptor: Descriptor = { mediaType: MT.manifest, digest, size: bytes.length, artifactType, ...(annotations ? { annotations } : {}) };
  if (subjectProcessed) return { digest, descriptor, mode: 'api' };
  await addToFallbackIndex(client, repo, subject.digest, descriptor);
  return { digest, descriptor, mode: 'tag' };
}

function parseIndex(bytes: Uint8Array, where: string): ImageIndex {
  let idx: ImageIndex;
  try {
    idx = JSON.parse(new TextDecoder().decode(bytes)) as ImageIndex;
  } catch (err) {
    throw new OssifyError(`${where} is not JSON`, { cause: err });
  }
  if (idx.schemaVersion !== 2 || !Array.isArray(idx.manifests)) throw new OssifyError(`${where} is not an OCI image index`);
  return idx;
}

/**
 * Read-modify-write of the fallback index. Two writers at once can lose an entry (the
 * image-spec accepts this for the tag schema); entries are kept sorted so the same set of
 * referrers always gives the same index bytes.
 */
async function addToFallbackIndex(client: RegistryClient, repo: string, subjectDigest: string, desc: Descriptor): Promise<void> {
  const tag = referrersTag(subjectDigest);
  const have = await getTaggedManifest(client, repo, tag);
  const idx: ImageIndex = have ? parseIndex(have.bytes, `${repo}:${tag}`) : { schemaVersion: 2, mediaType: MT.index, manifests: [] };
  if (idx.manifests.some((m) => m.digest === desc.digest)) return;
  idx.manifests = [...idx.manifests, desc].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  await client.putManifest(repo, tag, encodeJson(idx), MT.index);
}

export interface Referrers {
  descriptors: Descriptor[];
  mode: 'api' | 'tag';
}

/** The referrers of a digest (optionally of one artifactType), from the API or else the fallback tag. */
export async function listReferrers(client: RegistryClient, repo: string, subjectDigest: string, artifactType?: string): Promise<Referrers> {
  const api = await client.getReferrers(repo, subjectDigest, artifactType);
  let descriptors: Descriptor[];
  let mode: Referrers['mode'];
  if (api) {
    descriptors = parseIndex(api.bytes, `referrers of ${repo}@${subjectDigest}`).manifests;
    mode = 'api';
  } else {
    const have = await getTaggedManifest(client, repo, referrersTag(subjectDigest));
    descriptors = have ? parseIndex(have.bytes, `${repo}:${referrersTag(subjectDigest)}`).manifests : [];
    mode = 'tag';
  }
  // A registry that ignored the filter (or the fallback index) lists every type.
  if (artifactType !== undefined) descriptors = descriptors.filter((d) => d.artifactType === artifactType);
  return { descriptors, mode };
}

/** Whether the registry indexes referrers itself (distribution 2.x does not). */
export async function hasReferrersApi(client: RegistryClient, repo: string, anyDigest: string): Promise<boolean> {
  return (await client.getReferrers(repo, anyDigest)) !== undefined;
}

/** Reads an artifact manifest and checks that it is about `subjectDigest`. */
export async function readArtifact(client: RegistryClient, repo: string, desc: Pick<Descriptor, 'digest'>, subjectDigest: string): Promise<ArtifactManifest> {
  const { bytes } = await client.getManifest(repo, desc.digest);
  const m = JSON.parse(new TextDecoder().decode(bytes)) as ArtifactManifest;
  if (m.subject?.digest !== subjectDigest) throw new OssifyError(`artifact ${repo}@${desc.digest} is not about ${subjectDigest}`);
  if (!Array.isArray(m.layers)) throw new OssifyError(`artifact ${repo}@${desc.digest} has no layers`);
  return m;
}
