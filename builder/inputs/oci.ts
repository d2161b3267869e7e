import { readFile } from 'node:fs/promises';
import { type Descriptor, type ImageIndex, type ImageManifest, MT, type Platform, isIndexMediaType, isManifestMediaType, platformForArch } from '../oci/media-types.ts';
import { type ImageRef, parseReference, repoName } from '../oci/reference.ts';
import { RegistryClient, RegistryError, type RegistryClientOptions } from '../oci/registry.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import type { OciPin } from './pins.ts';
import type { BlobCache } from './cache.ts';

/**
 * The thin adapter between the OCI registry client (builder/oci, which it does not change)
 * and the input cache: manifests, configs and layers are kept in the same content-addressed
 * store as .deb files, re-hashed on every use, and fetched only when missing. The client
 * itself verifies every byte against its digest; the store checks again before adopting.
 * A digest reference (or a pinned tag) whose blobs are cached never contacts the registry.
 */

export interface ImageSourceOptions {
  insecure?: boolean;
  caFile?: string;
  /** os/architecture[/variant]; default linux and `arch`. */
  platform?: string;
  /** uname -m of the image being built. */
  arch: string;
  client?: Omit<RegistryClientOptions, 'insecure' | 'caFile'>;
}

export interface FetchedImage {
  manifest: ImageManifest;
  config: ImageConfig;
  /** Each layer's descriptor and the verified cache file holding it. */
  layers: { desc: Descriptor; path: string }[];
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs?: { type?: string; diff_ids?: string[] };
}

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);
const CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

export function wantedPlatform(opts: Pick<ImageSourceOptions, 'platform' | 'arch'>): Platform {
  if (opts.platform) {
    const [os, architecture, variant] = opts.platform.split('/') as [string, string, string | undefined];
    return { os, architecture, ...(variant ? { variant } : {}) };
  }
  const p = platformForArch(opts.arch);
  if (!p) throw new InputError(`no OCI platform is known for the architecture ${opts.arch}`);
  return p;
}

export function platformText(p: Partial<Platform> | undefined): string {
  if (!p) return 'unknown';
  return [p.os ?? '?', p.architecture ?? '?', ...(p.variant ? [p.variant] : [])].join('/');
}

function sha256Hex(digest: string, what: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new InputError(`${what} ${digest} is not a sha256 digest; the input cache keeps sha256 blobs only`);
  return m[1]!;
}

function parseJson<T>(bytes: Uint8Array, what: string): T {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as T;
  } catch {
    throw new OssifyError(`${what} is not valid JSON`);
  }
}

/**
 * `mediaType` is optional in OCI manifests and indexes (umoci and skopeo leave it out), and
 * a cached document has no Content-Type: then its shape says what it is.
 */
function documentType(bytes: Uint8Array, header: string, digest: string): string {
  const doc = parseJson<{ mediaType?: string; manifests?: unknown; config?: unknown; layers?: unknown }>(bytes, `manifest ${digest}`);
  if (doc.mediaType) return doc.mediaType;
  if (isIndexMediaType(header) || isManifestMediaType(header)) return header;
  if (Array.isArray(doc.manifests)) return MT.index;
  if (doc.config && Array.isArray(doc.layers)) return MT.manifest;
  return header;
}

/** One image source (a reference and how to reach its registry), with a lazily made client. */
export class ImageSource {
  readonly ref: ImageRef;
  readonly origin: string;
  private client: RegistryClient | undefined;

  constructor(
    reference: string,
    private readonly opts: ImageSourceOptions,
    private readonly cache: BlobCache,
  ) {
    this.ref = parseReference(reference);
    this.origin = `oci:${reference}`;
  }

  private async registry(): Promise<RegistryClient> {
    this.client ??= await RegistryClient.create(this.ref.registry, {
      ...this.opts.client,
      ...(this.opts.insecure ? { insecure: true } : {}),
      ...(this.opts.caFile ? { caFile: this.opts.caFile } : {}),
    });
    return this.client;
  }

  async close(): Promise<void> {
    await this.client?.close();
    this.client = undefined;
  }

  /** A manifest or index by digest: from the cache, else from the registry (then cached). */
  private async document(digest: string): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const hex = sha256Hex(digest, 'manifest');
    const cached = await this.cache.verifiedBlob(hex);
    let bytes: Uint8Array;
    let mediaType = '';
    if (cached) {
      bytes = await readFile(cached);
    } else {
      const got = await (await this.registry()).getManifest(this.ref.repository, digest);
      bytes = got.bytes;
      mediaType = got.mediaType;
      await this.cache.storeBytes(hex, bytes, `manifest ${digest}`);
    }
    return { bytes, mediaType: documentType(bytes, mediaType, digest) };
  }

  /** From an index, the image for the wanted platform. */
  private select(index: ImageIndex, from: string): Descriptor {
    const want = wantedPlatform(this.opts);
    const images = index.manifests.filter((m) => isManifestMediaType(m.mediaType));
    const match = images.filter(
      (m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture && (want.variant === undefined || m.platform?.variant === want.variant),
    );
    if (match.length === 0) {
      const have = images.map((m) => platformText(m.platform)).join(', ') || 'none';
      throw new InputError(`${this.origin}: the index ${from} has no ${platformText(want)} image (it has: ${have})`, {
        hint: 'set the input\'s platform: (os/architecture[/variant]) to one the index offers',
      });
    }
    return match[0]!;
  }

  /** Resolves the reference to the image manifest to use (and the index it came from). */
  async resolve(): Promise<OciPin> {
    let digest = this.ref.digest;
    let mediaType: string | undefined;
    let bytes: Uint8Array | undefined;
    if (digest === undefined) {
      const got = await (await this.registry()).getManifest(this.ref.repository, this.ref.tag ?? 'latest');
      digest = got.digest;
      bytes = got.bytes;
      mediaType = documentType(bytes, got.mediaType, digest);
      await this.cache.storeBytes(sha256Hex(digest, 'manifest'), bytes, `manifest ${digest}`);
    } else {
      ({ bytes, mediaType } = await this.document(digest));
    }
    if (isIndexMediaType(mediaType)) {
      const child = this.select(parseJson<ImageIndex>(bytes, `index ${digest}`), digest);
      return { manifest: child.digest, index: digest };
    }
    if (!isManifestMediaType(mediaType)) throw new InputError(`${this.origin} is a ${mediaType || 'document of unknown type'}, not an image`);
    return { manifest: digest };
  }

  /** The pinned image's manifest, config and layers, every blob verified in the cache. */
  async fetch(pin: OciPin): Promise<FetchedImage> {
    const { bytes, mediaType } = await this.document(pin.manifest);
    if (!isManifestMediaType(mediaType)) throw new InputError(`${this.origin}: ${pin.manifest} is a ${mediaType || 'document of unknown type'}, not an image manifest`);
    const manifest = parseJson<ImageManifest>(bytes, `manifest ${pin.manifest}`);
    if (!manifest.config || !Array.isArray(manifest.layers)) throw new OssifyError(`${this.origin}: manifest ${pin.manifest} has no config or layers`);
    if (!CONFIG_TYPES.has(manifest.config.mediaType)) {
      throw new InputError(`${this.origin}: not a container image (its config is ${manifest.config.mediaType}), so it has no file system to unpack`);
    }
    const config = parseJson<ImageConfig>(await this.blobBytes(manifest.config), `config ${manifest.config.digest}`);
    const want = wantedPlatform(this.opts);
    if ((config.architecture && config.architecture !== want.architecture) || (config.os && config.os !== want.os)) {
      throw new InputError(`${this.origin}: the image is for ${platformText(config)}, but this build needs ${platformText(want)}`, {
        hint: 'use a reference to the right platform\'s image or index, or set the input\'s platform:',
      });
    }
    const layers: FetchedImage['layers'] = [];
    for (const desc of manifest.layers) {
      if (!LAYER_TYPES.has(desc.mediaType)) throw new InputError(`${this.origin}: layer ${desc.digest} has media type ${desc.mediaType}, which is not a file system layer ossify can unpack`);
      layers.push({ desc, path: await this.blob(desc) });
    }
    return { manifest, config, layers };
  }

  private async blob(desc: Descriptor): Promise<string> {
    const hex = sha256Hex(desc.digest, 'blob');
    const cached = await this.cache.verifiedBlob(hex);
    if (cached) return cached;
    const client = await this.registry();
    return this.cache.store(hex, client.fetchBlob(this.ref.repository, desc), `blob ${desc.digest} from ${repoName(this.ref)}`);
  }

  private async blobBytes(desc: Descriptor): Promise<Uint8Array> {
    if (desc.size > 4 << 20) throw new OssifyError(`${this.origin}: config ${desc.digest} is ${desc.size} bytes, more than a config can be`);
    return readFile(await this.blob(desc));
  }

  /** Errors name the input; a reference the registry does not know is the profile's fault. */
  wrap(err: unknown): unknown {
    if (!(err instanceof OssifyError) || err.message.startsWith(this.origin)) return err;
    const message = `${this.origin}: ${err.message}`;
    const opts = { ...(err.hint ? { hint: err.hint } : {}), cause: err };
    if (err instanceof RegistryError && (err.status === 404 || err.code === 'MANIFEST_UNKNOWN' || err.code === 'NAME_UNKNOWN')) return new InputError(message, opts);
    return new OssifyError(message, { ...opts, exitCode: err.exitCode });
  }
}
