import { InputError, OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { BlobLocationCache } from './blob-cache.ts';
import { blobPath, encodeJson, readBlob, readIndex, readManifest } from './layout.ts';
import { type Descriptor, type ImageIndex, MT } from './media-types.ts';
import { type ImageRef, parseReference, repoName } from './reference.ts';
import { RegistryClient, type RegistryClientOptions, type RegistryStats, fileBlobSource, pushScope } from './registry.ts';

/** How a layout's images are pushed; builder/release/push.ts adds how a build's installer image is made. */
export interface PushOptions extends RegistryClientOptions {
  /** The blob-location cache file that enables cross-repository mounts; `false` keeps it in memory only. */
  blobCache?: string | false;
  /** Repositories of the same registry to try mounting blobs from, before the cache's guesses. */
  mountFrom?: string[];
  /** Blobs uploaded at once. */
  concurrency?: number;
  /** An existing client (its stats then add up across pushes). */
  client?: RegistryClient;
  env?: NodeJS.ProcessEnv;
}

export interface PushedImage {
  outDir: string;
  manifestDigest: string;
  platform: Descriptor['platform'];
  /** The layout was already up to date. */
  cached: boolean;
}

export interface PushResult {
  /** `registry/repository@sha256:…`: what to install from. */
  reference: string;
  registry: string;
  repository: string;
  digest: string;
  mediaType: string;
  tags: string[];
  images: PushedImage[];
  stats: RegistryStats;
}

async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < items.length && failed === undefined) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== undefined) throw failed;
}

interface PushContext {
  client: RegistryClient;
  ref: ImageRef;
  cache: BlobLocationCache;
  mountFrom: string[];
  concurrency: number;
}

/** Pushes one manifest of a layout and its blobs; returns the manifest bytes pushed by digest. */
async function pushManifestFromLayout(ctx: PushContext, layoutDir: string, desc: Descriptor): Promise<Uint8Array> {
  const { client, ref, cache } = ctx;
  const manifest = await readManifest(layoutDir, desc);
  const blobs = [manifest.config, ...manifest.layers];
  // Largest first: the payload starts moving at once, the small ones fill in beside it.
  const order = [...blobs].sort((a, b) => b.size - a.size);
  await pool(order, ctx.concurrency, async (b) => {
    const mountFrom = [...ctx.mountFrom, ...cache.candidates(ref.registry, b.digest, ref.repository)];
    await client.pushBlob(ref.repository, b, fileBlobSource(blobPath(layoutDir, b.digest), b.size), mountFrom);
    cache.record(ref.registry, b.digest, ref.repository);
  });
  // Never name an image the registry does not hold completely, whatever it said on the way.
  for (const b of blobs) {
    const size = await client.statBlob(ref.repository, b.digest, [pushScope(ref.repository)]);
    if (size !== b.size) throw new OssifyError(`after upload, ${repoName(ref)} ${size === undefined ? 'lacks' : `has a ${size}-byte`} blob ${b.digest} (expected ${b.size} bytes); not pushing the manifest`);
  }
  const bytes = await readBlob(layoutDir, desc);
  await client.putManifest(ref.repository, desc.digest, bytes, desc.mediaType);
  return bytes;
}

async function openCache(opts: PushOptions): Promise<BlobLocationCache> {
  if (opts.blobCache === false) return BlobLocationCache.open(undefined);
  return BlobLocationCache.open(opts.blobCache ?? BlobLocationCache.defaultPath(opts.env));
}

export function parseTarget(refStr: string): ImageRef {
  const ref = parseReference(refStr);
  if (ref.digest !== undefined) {
    throw new InputError(`push target ${refStr} names a digest; the digest is the result of a push`, { hint: 'push to REPO or REPO:TAG' });
  }
  return ref;
}

export interface LayoutImage {
  layoutDir: string;
  /** The manifest's descriptor, as an index lists it. */
  desc: Descriptor;
  /** What the result names it by (a build output, or the layout). */
  outDir: string;
  cached: boolean;
}

/** Pushes blobs, then the manifest (or index) by digest, then the tag — so a tag never names an incomplete image. */
export async function pushTargets(ref: ImageRef, opts: PushOptions, items: LayoutImage[], index?: (descs: Descriptor[]) => ImageIndex): Promise<PushResult> {
  const client = opts.client ?? (await RegistryClient.create(ref.registry, opts));
  try {
    await client.ping();
    const ctx: PushContext = { client, ref, cache: await openCache(opts), mountFrom: opts.mountFrom ?? [], concurrency: opts.concurrency ?? 3 };
    const pushed: { desc: Descriptor; bytes: Uint8Array }[] = [];
    for (const it of items) pushed.push({ desc: it.desc, bytes: await pushManifestFromLayout(ctx, it.layoutDir, it.desc) });

    let digest: string;
    let bytes: Uint8Array;
    let mediaType: string;
    if (index) {
      const idx = index(pushed.map((p) => ({ mediaType: p.desc.mediaType, digest: p.desc.digest, size: p.desc.size, ...(p.desc.platform ? { platform: p.desc.platform } : {}) })));
      bytes = encodeJson(idx);
      mediaType = MT.index;
      digest = await client.putManifest(ref.repository, `sha256:${sha256Hex(bytes)}`, bytes, mediaType);
    } else {
      ({ bytes } = pushed[0]!);
      digest = pushed[0]!.desc.digest;
      mediaType = pushed[0]!.desc.mediaType;
    }
    const tags: string[] = [];
    if (ref.tag !== undefined) {
      const there = await client.statManifest(ref.repository, digest);
      if (!there || (there.digest !== undefined && there.digest !== digest)) throw new OssifyError(`${repoName(ref)}@${digest} is not in the registry after its push; not tagging`);
      await client.putManifest(ref.repository, ref.tag, bytes, mediaType);
      tags.push(ref.tag);
    }
    await ctx.cache.save().catch(() => {});
    return {
      reference: `${repoName(ref)}@${digest}`,
      registry: ref.registry,
      repository: ref.repository,
      digest,
      mediaType,
      tags,
      images: items.map((it) => ({ outDir: it.outDir, manifestDigest: it.desc.digest, platform: it.desc.platform, cached: it.cached })),
      stats: { ...client.stats },
    };
  } finally {
    if (!opts.client) await client.close();
  }
}

/** Pushes the (first) image of any OCI layout directory as it is. */
export async function pushLayout(layoutDir: string, refStr: string, opts: PushOptions = {}): Promise<PushResult> {
  const ref = parseTarget(refStr);
  const idx = await readIndex(layoutDir);
  const desc = idx.manifests[0];
  if (!desc || desc.mediaType !== MT.manifest) throw new InputError(`${layoutDir}/index.json names no image manifest first`);
  const { annotations: _drop, ...plain } = desc;
  return pushTargets(ref, opts, [{ layoutDir, desc: plain, outDir: layoutDir, cached: true }]);
}
