import { collectBytes as collect } from '../util/bytes.ts';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipDeterministic } from '../util/gzip.ts';
import { gzipDeterministicAhead } from '../util/gzip-ahead.ts';
import { baseLayerTar, INSTALL_SCRIPT } from './base-layer.ts';
// The entrypoint is the on-device installer: the image upgrades the machine it runs on.
import { DEVICE_SCRIPT } from '../installer/device-script.ts';
import { type TarEntry, writeTar } from '../formats/tar.ts';
import { type Content, bytesContent, hostFileContent, readContent, textContent } from '../tree/content.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { assertBinaryArch } from '../arch-check.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import { gcLayout, hasBlob, initLayout, putBlobBytes, putBlobStream, putJson, readIndex, readManifest, writeIndex } from '../oci/layout.ts';
import { ANNOTATION, type Descriptor, type ImageManifest, MT, type Platform, platformForArch } from '../oci/media-types.ts';
import { BUILD_JSON, OPTIONAL_ARTIFACTS, PAYLOAD_REQUIRED, RELEASE_JSON, SITE_SEED } from './artifacts.ts';
import { buildDigest, loadBuildJson, type BuildJson } from './build-json.ts';
import { encodeRelease, parseRelease, releasesOfBuild, rfc3339, type Release } from './release-json.ts';

/** Bumped whenever the image's structure changes, so a cached layout from an older ossify is rebuilt. */
const IMAGE_FORMAT = 3; // 2: a site's release.json names its baseDigest; 3: release.json carries the boot record

/** Inside the image: where the payload lives and what runs. */
export const PAYLOAD_DIR = 'ossify/payload';
export { INSTALL_SCRIPT } from './base-layer.ts';

export interface InstallerImageOptions {
  /** A statically linked busybox (Debian busybox-static); its bytes go into the image. */
  busybox: Uint8Array | Content;
  /** `org.opencontainers.image.source`; default build.json `source`. */
  source?: string;
  /** `org.opencontainers.image.revision`; default build.json `revision`. */
  revision?: string;
  /** Seconds since the epoch for every timestamp; default build.json `epoch`, then SOURCE_DATE_EPOCH. */
  epoch?: number;
  env?: NodeJS.ProcessEnv;
  /** Rebuild even when the layout already holds this exact image. */
  force?: boolean;
  /** fleet: layers made before (the same busybox, the same payload) are taken from here instead of compressed again. */
  layerCache?: LayerCache;
}

/**
 * fleet: where the base and payload layers of earlier images are kept. Every site
 * of a fleet has the same two layers; only its small site layer is new.
 */
export interface LayerCache {
  /** Puts the layer stored under `key` into the layout (`blobs/sha256/…`) and describes it; undefined when there is none. */
  get(key: string, layoutDir: string): Promise<LayerBlob | undefined>;
  /** Keeps the layer the layout holds under `key`. */
  put(key: string, layoutDir: string, layer: LayerBlob): Promise<void>;
}

export interface LayerBlob {
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar, for the config's diff_ids. */
  diffId: string;
}

async function cachedLayer(cache: LayerCache | undefined, layoutDir: string, key: string, make: () => Promise<LayerBlob>): Promise<LayerBlob> {
  const hit = await cache?.get(key, layoutDir);
  if (hit) return hit;
  const made = await make();
  await cache?.put(key, layoutDir, made);
  return made;
}

export interface InstallerImage {
  /** `out/<name>-<version>/oci`, an OCI image layout. */
  layoutDir: string;
  manifestDigest: string;
  /** The manifest's descriptor, with platform, as an index would list it. */
  manifest: Descriptor;
  configDigest: string;
  layers: Descriptor[];
  platform: Platform;
  release: Release;
  /** True when the layout was already up to date and nothing was written. */
  cached: boolean;
}

function resolveEpoch(build: BuildJson, opts: InstallerImageOptions): number {
  if (opts.epoch !== undefined) return opts.epoch;
  if (build.epoch !== undefined) return build.epoch;
  const sde = (opts.env ?? process.env).SOURCE_DATE_EPOCH;
  if (sde !== undefined && /^\d+$/.test(sde)) return Number(sde);
  throw new InputError('build.json has no epoch and SOURCE_DATE_EPOCH is not set: the image timestamp would not be reproducible');
}

const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** Refuses a dynamically linked busybox: it would not run in an image that has no libc. */
export function assertStaticElf(bytes: Uint8Array, origin: string): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hint = 'use a static busybox: apt-get install busybox-static (it provides /bin/busybox)';
  if (bytes.length < 64 || dv.getUint32(0) !== 0x7f454c46) throw new InputError(`${origin} is not an ELF executable`, { hint });
  const is64 = bytes[4] === 2;
  const le = bytes[5] === 1;
  const phoff = is64 ? Number(dv.getBigUint64(32, le)) : dv.getUint32(28, le);
  const phentsize = dv.getUint16(is64 ? 54 : 42, le);
  const phnum = dv.getUint16(is64 ? 56 : 44, le);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > bytes.length) break;
    if (dv.getUint32(off, le) === 3 /* PT_INTERP */) {
      throw new InputError(`${origin} is dynamically linked; the installer image has no libc`, { hint });
    }
  }
}

/** A file's content that fails the stream if its bytes are not the ones build.json recorded. */
function verifiedContent(path: string, name: string, expect: { sha256: string; size: number }): Content {
  const inner = hostFileContent(path, expect.size);
  return {
    size: inner.size,
    origin: path,
    async *stream() {
      const h = createHash('sha256');
      for await (const c of inner.stream()) {
        h.update(c);
        yield c;
      }
      if (h.digest('hex') !== hexOf(expect.sha256)) {
        throw new InputError(`${path} does not match the sha256 recorded for ${name} in build.json: the build output was modified`, {
          hint: 'rebuild with ossify build',
        });
      }
    },
  };
}


/** Reads an existing layout of this output if it is the image `inputDigest` describes. */
async function cachedImage(layoutDir: string, inputDigest: string): Promise<InstallerImage | undefined> {
  try {
    const idx = await readIndex(layoutDir);
    if (idx.annotations?.[ANNOTATION.ossifyInputs] !== inputDigest) return undefined;
    return await describeLayout(layoutDir, true);
  } catch {
    return undefined;
  }
}

/** The installer image an `oci/` layout holds, checked to be complete. */
export async function describeLayout(layoutDir: string, cached = false): Promise<InstallerImage> {
  const idx = await readIndex(layoutDir);
  const desc = idx.manifests[0];
  if (!desc || idx.manifests.length !== 1 || desc.mediaType !== MT.manifest) {
    throw new OssifyError(`${layoutDir} does not hold exactly one image manifest`);
  }
  const m = await readManifest(layoutDir, desc);
  for (const d of [m.config, ...m.layers]) {
    if (!(await hasBlob(layoutDir, d))) throw new OssifyError(`${layoutDir} lacks blob ${d.digest}`);
  }
  const releaseText = m.annotations?.[ANNOTATION.ossifyRelease];
  if (releaseText === undefined) throw new OssifyError(`${layoutDir} is not an ossify installer image (no release annotation)`);
  const release = parseRelease(releaseText, layoutDir);
  return {
    layoutDir,
    manifestDigest: desc.digest,
    manifest: desc,
    configDigest: m.config.digest,
    layers: m.layers,
    platform: desc.platform ?? platformForArch(release.arch) ?? { architecture: release.arch, os: 'linux' },
    release,
    cached,
  };
}

/**
 * Builds the installer image of a build output into `outDir/oci/` and returns its digests.
 * Same build output + same busybox = same manifest digest, on any machine.
 */
export async function buildInstallerImage(outDir: string, opts: InstallerImageOptions): Promise<InstallerImage> {
  const build = await loadBuildJson(outDir);
  const epoch = resolveEpoch(build, opts);
  const platform = platformForArch(build.arch);
  if (!platform) throw new InputError(`build.json arch ${JSON.stringify(build.arch)} has no OCI platform mapping`);

  const busyboxBytes = opts.busybox instanceof Uint8Array ? opts.busybox : await readContent(opts.busybox);
  const busyboxOrigin = opts.busybox instanceof Uint8Array ? 'busybox' : opts.busybox.origin;
  assertStaticElf(busyboxBytes, busyboxOrigin);
  assertBinaryArch(busyboxBytes, build.arch, busyboxOrigin, `pass a static busybox for ${build.arch} (busybox-static of that architecture)`);

  const payloadNames = [...PAYLOAD_REQUIRED, ...OPTIONAL_ARTIFACTS.filter((n) => build.artifacts[n] !== undefined)];
  for (const n of PAYLOAD_REQUIRED) {
    if (!build.artifacts[n]) throw new InputError(`${outDir}/build.json lists no ${n} artifact; an installer image needs ${PAYLOAD_REQUIRED.join(', ')}`);
  }
  for (const n of payloadNames) {
    const a = build.artifacts[n]!;
    const st = await stat(join(outDir, n)).catch(() => undefined);
    if (!st?.isFile()) throw new InputError(`${outDir}/${n} is missing but build.json lists it`, { hint: 'rebuild with ossify build' });
    if (st.size !== a.size) throw new InputError(`${outDir}/${n} is ${st.size} bytes, build.json says ${a.size}: the build output was modified`);
  }

  const source = opts.source ?? build.source;
  const revision = opts.revision ?? build.revision;
  const layoutDir = join(outDir, 'oci');
  const inputDigest = `sha256:${sha256Hex(
    canonicalJson({ format: IMAGE_FORMAT, build: buildDigest(build), busybox: sha256Hex(busyboxBytes), epoch, source: source ?? null, revision: revision ?? null }),
  )}`;
  if (!opts.force) {
    const hit = await cachedImage(layoutDir, inputDigest);
    if (hit) return hit;
  }

  const created = rfc3339(epoch);
  // fleet: a site build's payload layer is its base's, byte for byte (release.json
  // names the base digest and the OS artifacts); the site layer adds site.tar and the site's
  // own release.json over it.
  const site = build.artifacts[SITE_SEED];
  if (site) {
    const st = await stat(join(outDir, SITE_SEED)).catch(() => undefined);
    if (st?.size !== site.size) throw new InputError(`${outDir}/${SITE_SEED} is missing or not the size build.json records`, { hint: 'rebuild with ossify build' });
  }
  const { release, base: baseRelease } = releasesOfBuild(build, created, `${outDir}/${BUILD_JSON}`);
  const releaseText = encodeRelease(release);
  const baseReleaseText = encodeRelease(baseRelease);

  await initLayout(layoutDir);

  // Layer 1: busybox and the script (base-layer.ts), maybe compressed ahead while the build ran.
  const baseBlob = await cachedLayer(opts.layerCache, layoutDir, sha256Hex(canonicalJson({ format: IMAGE_FORMAT, layer: 'base', busybox: sha256Hex(busyboxBytes), script: sha256Hex(DEVICE_SCRIPT), epoch })), async () => {
    const baseTar = await baseLayerTar(busyboxBytes, busyboxOrigin, epoch);
    return { ...(await putBlobBytes(layoutDir, await gzipDeterministicAhead(baseTar))), diffId: `sha256:${sha256Hex(baseTar)}` };
  });

  // Layer 2: the payload, already compressed (squashfs, kernel, initramfs), so stored as is.
  const payloadEntries: TarEntry[] = [
    { type: 'dir', path: 'ossify', mode: 0o755 },
    { type: 'dir', path: PAYLOAD_DIR, mode: 0o755 },
    { type: 'file', path: `${PAYLOAD_DIR}/${RELEASE_JSON}`, mode: 0o644, content: textContent(baseReleaseText) },
    ...payloadNames.map((n): TarEntry => ({ type: 'file', path: `${PAYLOAD_DIR}/${n}`, mode: 0o644, content: verifiedContent(join(outDir, n), n, build.artifacts[n]!) })),
  ];
  const payloadKey = sha256Hex(canonicalJson({ format: IMAGE_FORMAT, layer: 'payload', release: baseReleaseText, files: payloadNames.map((n) => [n, hexOf(build.artifacts[n]!.sha256), build.artifacts[n]!.size]), epoch }));
  const payloadBlob = await cachedLayer(opts.layerCache, layoutDir, payloadKey, async () => {
    // Stored uncompressed, so the blob digest is the diff_id.
    const b = await putBlobStream(layoutDir, writeTar(payloadEntries, { mtime: epoch }));
    return { ...b, diffId: b.digest };
  });
  // fleet: the site layer, a few KiB: the seed and the site's release.json (over the base one).
  let siteBlob: LayerBlob | undefined;
  if (site) {
    const siteTarBytes = await collect(
      writeTar(
        [
          { type: 'dir', path: 'ossify', mode: 0o755 },
          { type: 'dir', path: PAYLOAD_DIR, mode: 0o755 },
          { type: 'file', path: `${PAYLOAD_DIR}/${RELEASE_JSON}`, mode: 0o644, content: textContent(releaseText) },
          { type: 'file', path: `${PAYLOAD_DIR}/${SITE_SEED}`, mode: 0o644, content: verifiedContent(join(outDir, SITE_SEED), SITE_SEED, site) },
        ],
        { mtime: epoch },
      ),
    );
    siteBlob = { ...(await putBlobBytes(layoutDir, gzipDeterministic(siteTarBytes))), diffId: `sha256:${sha256Hex(siteTarBytes)}` };
  }

  const labels: Record<string, string> = {
    [ANNOTATION.version]: build.version,
    [ANNOTATION.created]: created,
    [ANNOTATION.title]: build.name,
    ...(source !== undefined ? { [ANNOTATION.source]: source } : {}),
    ...(revision !== undefined ? { [ANNOTATION.revision]: revision } : {}),
  };
  const config = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created,
    config: {
      Entrypoint: ['/bin/busybox', 'sh', `/${INSTALL_SCRIPT}`],
      Env: ['PATH=/bin'],
      WorkingDir: '/',
      Labels: labels,
    },
    rootfs: { type: 'layers', diff_ids: [baseBlob.diffId, payloadBlob.diffId, ...(siteBlob ? [siteBlob.diffId] : [])] },
    history: [
      { created, created_by: 'ossify: static busybox and /ossify/install.sh' },
      { created, created_by: `ossify: payload of ${build.name} ${build.version}` },
      ...(siteBlob ? [{ created, created_by: `ossify: site ${build.site?.name ?? ''}` }] : []),
    ],
  };
  const { descriptor: configDesc } = await putJson(layoutDir, MT.config, config);

  const layers: Descriptor[] = [
    { mediaType: MT.layerTarGzip, digest: baseBlob.digest, size: baseBlob.size, annotations: { [ANNOTATION.ossifyLayer]: 'base' } },
    { mediaType: MT.layerTar, digest: payloadBlob.digest, size: payloadBlob.size, annotations: { [ANNOTATION.ossifyLayer]: 'payload' } },
    ...(siteBlob ? [{ mediaType: MT.layerTarGzip, digest: siteBlob.digest, size: siteBlob.size, annotations: { [ANNOTATION.ossifyLayer]: 'site' } }] : []),
  ];
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: configDesc,
    layers,
    // release.json rides along in the manifest too, so `skopeo inspect` and a pull can check it before any payload byte.
    annotations: { ...labels, [ANNOTATION.ossifyRelease]: releaseText },
  };
  const { descriptor: mdesc } = await putJson(layoutDir, MT.manifest, manifest, {
    platform,
    annotations: { [ANNOTATION.refName]: build.version },
  });
  await writeIndex(layoutDir, {
    schemaVersion: 2,
    mediaType: MT.index,
    manifests: [mdesc],
    annotations: { [ANNOTATION.ossifyBuild]: buildDigest(build), [ANNOTATION.ossifyInputs]: inputDigest },
  });
  await gcLayout(layoutDir);

  return { layoutDir, manifestDigest: mdesc.digest, manifest: mdesc, configDigest: configDesc.digest, layers, platform, release, cached: false };
}
