import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Content, hostFileContent } from '../tree/content.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { BlobLocationCache } from './blob-cache.ts';
import { type InstallerImage, buildDigest, buildInstallerImage, describeLayout, loadBuildJson } from './installer-image.ts';
import { blobPath, encodeJson, readBlob, readIndex, readManifest } from './layout.ts';
import { ANNOTATION, type Descriptor, type ImageIndex, MT } from './media-types.ts';
import { type ImageRef, parseReference, repoName } from './reference.ts';
import { RegistryClient, type RegistryClientOptions, type RegistryStats, fileBlobSource, pushScope } from './registry.ts';

export interface PushOptions extends RegistryClientOptions {
  /** Static busybox to build the image with; when absent an up-to-date `oci/` layout is pushed as it is. */
  busybox?: Uint8Array | Content;
  /** Where to read a static busybox when the layout must be (re)built and `busybox` is not given. */
  busyboxPath?: string;
  source?: string;
  revision?: string;
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

async function busyboxFromPath(path: string): Promise<Content> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) {
    throw new InputError(`no installer image in the build output and no busybox at ${path} to build one`, {
      hint: 'apt-get install busybox-static, or pass --busybox PATH to a static busybox',
    });
  }
  return hostFileContent(path, st.size);
}

/**
 * The installer image of a build output: the layout the build wrote when it still matches
 * build.json, else one built now (cached by its inputs, so repeating a push builds nothing).
 */
export async function ensureInstallerImage(outDir: string, opts: PushOptions = {}): Promise<InstallerImage> {
  const imageOpts = {
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.revision !== undefined ? { revision: opts.revision } : {}),
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  };
  if (opts.busybox !== undefined) return buildInstallerImage(outDir, { busybox: opts.busybox, ...imageOpts });
  if (opts.source === undefined && opts.revision === undefined) {
    const build = await loadBuildJson(outDir);
    const layoutDir = join(outDir, 'oci');
    const idx = await readIndex(layoutDir).catch(() => undefined);
    if (idx?.annotations?.[ANNOTATION.ossifyBuild] === buildDigest(build)) {
      const img = await describeLayout(layoutDir, true).catch(() => undefined);
      if (img) return img;
    }
  }
  return buildInstallerImage(outDir, { busybox: await busyboxFromPath(opts.busyboxPath ?? '/bin/busybox'), ...imageOpts });
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

function parseTarget(refStr: string): ImageRef {
  const ref = parseReference(refStr);
  if (ref.digest !== undefined) {
    throw new InputError(`push target ${refStr} names a digest; the digest is the result of a push`, { hint: 'push to REPO or REPO:TAG' });
  }
  return ref;
}

/** Pushes blobs, then the manifest (or index) by digest, then the tag — so a tag never names an incomplete image. */
async function pushTargets(ref: ImageRef, opts: PushOptions, items: { layoutDir: string; desc: Descriptor; outDir: string; cached: boolean }[], index?: (descs: Descriptor[]) => ImageIndex): Promise<PushResult> {
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

function layoutItem(img: InstallerImage, outDir: string) {
  const { annotations: _drop, ...desc } = img.manifest;
  return { layoutDir: img.layoutDir, desc, outDir, cached: img.cached };
}

/** Builds (if needed) and pushes the installer image of one build output. */
export async function pushBuild(outDir: string, ref: string, opts: PushOptions = {}): Promise<PushResult> {
  return pushBuilds([outDir], ref, opts);
}

/** Several build outputs (one per architecture) become an image index; one becomes a plain image. */
export async function pushBuilds(outDirs: readonly string[], refStr: string, opts: PushOptions = {}): Promise<PushResult> {
  if (outDirs.length === 0) throw new InputError('nothing to push: give at least one build output directory');
  const ref = parseTarget(refStr);
  const images: InstallerImage[] = [];
  for (const d of outDirs) images.push(await ensureInstallerImage(d, opts));
  const items = images.map((img, i) => layoutItem(img, outDirs[i]!));
  if (images.length === 1) return pushTargets(ref, opts, items);

  const seen = new Map<string, string>();
  for (const [i, img] of images.entries()) {
    const key = `${img.platform.os}/${img.platform.architecture}${img.platform.variant ? `/${img.platform.variant}` : ''}`;
    if (seen.has(key)) throw new InputError(`${outDirs[i]} and ${seen.get(key)} are both ${key}; an index needs one image per platform`);
    seen.set(key, outDirs[i]!);
  }
  const names = new Set(images.map((i) => i.release.name));
  const versions = new Set(images.map((i) => i.release.version));
  const created = images.map((i) => i.release.created).sort().at(-1)!;
  return pushTargets(ref, opts, items, (manifests) => ({
    schemaVersion: 2,
    mediaType: MT.index,
    manifests,
    annotations: {
      [ANNOTATION.created]: created,
      ...(names.size === 1 ? { [ANNOTATION.title]: [...names][0]! } : {}),
      ...(versions.size === 1 ? { [ANNOTATION.version]: [...versions][0]! } : {}),
    },
  }));
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
