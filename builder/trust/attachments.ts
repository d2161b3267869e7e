import { encodeJson } from '../oci/layout.ts';
import { type Descriptor, MT } from '../oci/media-types.ts';
import { assertDigest } from '../oci/reference.ts';
import { describeBytes, getTaggedManifest } from '../oci/referrers.ts';
import { type RegistryClient, bytesBlobSource } from '../oci/registry.ts';
import { OssifyError } from '../util/errors.ts';

/**
 * cosign's tag-based attachments: signatures under `sha256-<hex>.sig`, attestations under
 * `sha256-<hex>.att`. Each is one OCI image manifest whose layers are the payloads (one per
 * signature) and whose config lists them as diff_ids; signing again appends a layer. This is
 * what skopeo reads and writes with `use-sigstore-attachments: true`.
 */

export type AttachmentKind = 'sig' | 'att';

export function attachmentTag(digest: string, kind: AttachmentKind): string {
  assertDigest(digest);
  return `${digest.replace(':', '-')}.${kind}`;
}

export interface AttachmentLayer {
  descriptor: Descriptor;
  payload: Uint8Array;
}

interface AttachmentManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  [k: string]: unknown;
}

/** Payloads are small (a signature payload, an attestation envelope); more than this is not one of ours. */
const MAX_PAYLOAD = 16 << 20;

async function readAttachmentManifest(client: RegistryClient, repo: string, tag: string): Promise<AttachmentManifest | undefined> {
  const got = await getTaggedManifest(client, repo, tag);
  if (!got) return undefined;
  if (got.mediaType !== MT.manifest) throw new OssifyError(`${repo}:${tag} is a ${got.mediaType}, not an OCI image manifest`);
  const m = JSON.parse(new TextDecoder().decode(got.bytes)) as AttachmentManifest;
  if (m.schemaVersion !== 2 || !m.config || !Array.isArray(m.layers)) throw new OssifyError(`${repo}:${tag} is not an image manifest`);
  return m;
}

/** Every layer of the attachment with its payload bytes (each checked against its digest by the client). */
export async function readAttachments(client: RegistryClient, repo: string, digest: string, kind: AttachmentKind, mediaType?: string): Promise<AttachmentLayer[]> {
  const m = await readAttachmentManifest(client, repo, attachmentTag(digest, kind));
  if (!m) return [];
  const out: AttachmentLayer[] = [];
  for (const d of m.layers) {
    if (mediaType !== undefined && d.mediaType !== mediaType) continue;
    out.push({ descriptor: d, payload: await client.fetchBlobBytes(repo, d, MAX_PAYLOAD) });
  }
  return out;
}

const sameAnnotations = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => {
  const ea = Object.entries(a ?? {}).sort();
  const eb = Object.entries(b ?? {}).sort();
  return ea.length === eb.length && ea.every(([k, v], i) => eb[i]![0] === k && eb[i]![1] === v);
};

/**
 * Appends a payload to the attachment of `digest`, keeping the layers already there (other
 * signers' signatures included). A layer identical in bytes and annotations is not added twice.
 */
export async function appendAttachment(
  client: RegistryClient,
  repo: string,
  digest: string,
  kind: AttachmentKind,
  layer: { mediaType: string; payload: Uint8Array; annotations: Record<string, string> },
): Promise<'added' | 'exists'> {
  const tag = attachmentTag(digest, kind);
  const existing = await readAttachmentManifest(client, repo, tag);
  const desc = describeBytes(layer.mediaType, layer.payload, layer.annotations);
  if (existing?.layers.some((l) => l.mediaType === desc.mediaType && l.digest === desc.digest && sameAnnotations(l.annotations, desc.annotations))) return 'exists';

  let config: Record<string, unknown> = { architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: [] } };
  if (existing) {
    const bytes = await client.fetchBlobBytes(repo, existing.config, 1 << 20);
    try {
      config = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    } catch (err) {
      throw new OssifyError(`the config of ${repo}:${tag} is not JSON`, { cause: err });
    }
  }
  const rootfs = (config.rootfs ?? {}) as { type?: string; diff_ids?: string[] };
  config.rootfs = { ...rootfs, type: 'layers', diff_ids: [...(rootfs.diff_ids ?? []), desc.digest] };

  await client.pushBlob(repo, desc, bytesBlobSource(layer.payload));
  const configBytes = encodeJson(config);
  const configDesc = describeBytes(MT.config, configBytes);
  await client.pushBlob(repo, configDesc, bytesBlobSource(configBytes));
  const manifest: AttachmentManifest = {
    ...(existing ?? {}),
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: configDesc,
    layers: [...(existing?.layers ?? []), desc],
  };
  await client.putManifest(repo, tag, encodeJson(manifest), MT.manifest);
  return 'added';
}
