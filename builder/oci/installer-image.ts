import { collectBytes as collect } from '../util/bytes.ts';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipDeterministic } from '../util/gzip.ts';
import { gzipDeterministicAhead } from '../util/gzip-ahead.ts';
import { baseLayerTar, INSTALL_SCRIPT } from './base-layer.ts';
// The entrypoint is the on-device installer: the image upgrades the machine it runs on.
import { DEVICE_SCRIPT } from '../installer/device-script.ts';
import { BOOT_ARTIFACTS } from '../boot/esp.ts';
import { encodeReleaseBoot, parseBuildBoot, ReleaseBootSchema, type ReleaseBoot } from '../boot/release-boot.ts';
import { z } from 'zod';
import { type TarEntry, writeTar } from '../formats/tar.ts';
import { type Content, bytesContent, hostFileContent, readContent, textContent } from '../tree/content.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { assertBinaryArch } from '../arch-check.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import { gcLayout, hasBlob, initLayout, putBlobBytes, putBlobStream, putJson, readIndex, readManifest, writeIndex } from './layout.ts';
import { ANNOTATION, type Descriptor, type ImageManifest, MT, type Platform, platformForArch } from './media-types.ts';

/** Bumped whenever the image's structure changes, so a cached layout from an older ossify is rebuilt. */
const IMAGE_FORMAT = 3; // 2: a site's release.json names its baseDigest; 3: release.json carries the boot record

/** Inside the image: where the payload lives and what runs. */
export const PAYLOAD_DIR = 'ossify/payload';
export { INSTALL_SCRIPT } from './base-layer.ts';
export const PAYLOAD_REQUIRED = ['rootfs.squashfs', 'vmlinuz', 'initramfs.img'] as const;
/**
 * Shipped when the build produced them: the dm-verity hash tree, the slots' unified kernel
 * images, and the ESP's shared boot files (systemd-boot as the ESP holds it — signed under
 * Secure Boot —, loader.conf, loader/keys/auto/{PK,KEK,db}.auth; see BOOT_ARTIFACTS).
 */
export const PAYLOAD_OPTIONAL = ['rootfs.verity', 'uki-a.efi', 'uki-b.efi', ...BOOT_ARTIFACTS] as const;

const Hex64 = z.string().regex(/^(sha256:)?[a-f0-9]{64}$/, 'must be a sha256 hex digest');
const ArtifactSchema = z.looseObject({ sha256: Hex64, size: z.number().int().nonnegative() });
export const BuildJsonSchema = z.looseObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be a plain name'),
  version: z.string().min(1),
  arch: z.string().min(1),
  profileDigest: z.string().min(1),
  epoch: z.number().int().nonnegative().optional(),
  artifacts: z.record(z.string(), ArtifactSchema),
  slots: z.looseObject({ rootSize: z.number().int().positive().optional() }).optional(),
  timings: z.record(z.string(), z.number()).optional(),
  roothash: z.string().optional(),
  verity: z.looseObject({ roothash: z.string().optional() }).optional(),
  source: z.string().optional(),
  revision: z.string().optional(),
  // fleet: a site build's base digest and site, and its site seed (artifact site.tar).
  baseDigest: z.string().optional(),
  site: z.looseObject({ name: z.string() }).optional(),
  /** How the release boots (builder/boot/release-boot.ts); read with parseBuildBoot, which knows the older form. */
  boot: z.unknown().optional(),
  partitions: z.array(z.looseObject({ label: z.string(), size: z.number().int().positive() })).optional(),
});
export type BuildJson = z.infer<typeof BuildJsonSchema>;

/** What the device (and `ossify pull`) reads to know what it is installing. */
export interface Release {
  schemaVersion: 1;
  name: string;
  version: string;
  arch: string;
  profileDigest: string;
  /**
   * fleet (docs/fleet.md): a site release's base digest (its profile's without `site:`), which
   * the OS artifacts, disk GUIDs and FAT serial derive from; absent when it equals profileDigest.
   */
  baseDigest?: string;
  created: string;
  artifacts: Record<string, { sha256: string; size: number }>;
  requirements: { minRootSlotSize: number };
  roothash?: string;
  /** How the release boots, as its build wrote disk.raw; absent in a release made by an older ossify. */
  boot?: ReleaseBoot;
  /** The partition sizes of its build's disk.raw (bytes), which a new disk gets; absent in a release made by an older ossify. */
  disk?: ReleaseDisk;
}

export interface ReleaseDisk {
  esp: number;
  root: number;
  state: number;
}

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

/** The site seed of a site build: its own layer, beside the payload every site shares. */
export const SITE_ARTIFACT = 'site.tar';

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

export async function loadBuildJson(outDir: string): Promise<BuildJson> {
  const p = join(outDir, 'build.json');
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch (err) {
    throw new InputError(`${outDir} is not an ossify build output: cannot read build.json`, { cause: err, hint: 'run ossify build first, or pass out/<name>-<version>/' });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${p} is not valid JSON`, { cause: err });
  }
  const r = BuildJsonSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new InputError(`${p}: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid'}`);
  }
  return r.data;
}

/**
 * build.json without what varies between identical builds (timings) and what the installer
 * image does not carry (the disk's other image formats), as the layout's cache key.
 */
export function buildDigest(build: BuildJson): string {
  const { timings: _t, outputs: _o, ...rest } = build;
  return `sha256:${sha256Hex(canonicalJson(rest))}`;
}

export function rfc3339(epoch: number): string {
  return new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z');
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

/**
 * The release.json of a build output and of its base: the same for an OS build; for a site
 * build the first adds site.tar and names the base digest, the second (the payload layer's,
 * shared by every site of the base) describes the OS alone.
 */
export function releasesOfBuild(build: BuildJson, created: string, origin: string): { release: Release; base: Release } {
  for (const n of PAYLOAD_REQUIRED) {
    if (!build.artifacts[n]) throw new InputError(`${origin} lists no ${n} artifact; a release needs ${PAYLOAD_REQUIRED.join(', ')}`, { hint: 'rebuild with ossify build' });
  }
  const artifacts: Release['artifacts'] = {};
  for (const n of [...PAYLOAD_REQUIRED, ...PAYLOAD_OPTIONAL]) {
    const a = build.artifacts[n];
    if (a) artifacts[n] = { sha256: hexOf(a.sha256), size: a.size };
  }
  const roothash = build.verity?.roothash ?? build.roothash;
  const boot = parseBuildBoot(build.boot, origin);
  const part = (label: string) => build.partitions?.find((p) => p.label === label)?.size;
  const [esp, root, state] = [part('ESP'), build.slots?.rootSize ?? part('ROOT-A'), part('STATE')];
  const base: Release = {
    schemaVersion: 1,
    name: build.name,
    version: build.version,
    arch: build.arch,
    profileDigest: build.profileDigest,
    created,
    artifacts,
    requirements: { minRootSlotSize: artifacts['rootfs.squashfs']!.size + (artifacts['rootfs.verity']?.size ?? 0) },
    ...(roothash !== undefined ? { roothash } : {}),
    ...(boot ? { boot } : {}),
    ...(esp !== undefined && root !== undefined && state !== undefined ? { disk: { esp, root, state } } : {}),
  };
  const site = build.artifacts[SITE_ARTIFACT];
  if (!site) return { release: base, base };
  return {
    release: {
      ...base,
      // What the installer derives the disk's GUIDs and FAT serial from, as the build did.
      ...(build.baseDigest !== undefined && build.baseDigest !== build.profileDigest ? { baseDigest: build.baseDigest } : {}),
      artifacts: { ...artifacts, [SITE_ARTIFACT]: { sha256: hexOf(site.sha256), size: site.size } },
    },
    base: { ...base, profileDigest: build.baseDigest ?? build.profileDigest },
  };
}

/** release.json: stable key order, one artifact per line so the script can read it without jq. */
export function encodeRelease(r: Release): string {
  const lines: string[] = ['{'];
  lines.push(`  "schemaVersion": ${r.schemaVersion},`);
  for (const k of ['name', 'version', 'arch', 'profileDigest', 'created'] as const) {
    lines.push(`  ${JSON.stringify(k)}: ${JSON.stringify(r[k])},`);
    if (k === 'profileDigest' && r.baseDigest !== undefined) lines.push(`  "baseDigest": ${JSON.stringify(r.baseDigest)},`);
  }
  if (r.roothash !== undefined) lines.push(`  "roothash": ${JSON.stringify(r.roothash)},`);
  if (r.boot !== undefined) lines.push(...encodeReleaseBoot(r.boot));
  if (r.disk !== undefined) lines.push(`  "disk": {"esp": ${r.disk.esp}, "root": ${r.disk.root}, "state": ${r.disk.state}},`);
  lines.push(`  "requirements": {"minRootSlotSize": ${r.requirements.minRootSlotSize}},`);
  lines.push('  "artifacts": {');
  const names = Object.keys(r.artifacts).sort();
  names.forEach((n, i) => {
    const a = r.artifacts[n]!;
    lines.push(`    ${JSON.stringify(n)}: {"sha256": ${JSON.stringify(a.sha256)}, "size": ${a.size}}${i < names.length - 1 ? ',' : ''}`);
  });
  lines.push('  }', '}', '');
  return lines.join('\n');
}

const ReleaseSchema = z.looseObject({
  schemaVersion: z.literal(1),
  name: z.string(),
  version: z.string(),
  arch: z.string(),
  profileDigest: z.string(),
  baseDigest: z.string().optional(),
  created: z.string(),
  artifacts: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), z.object({ sha256: z.string().regex(/^[a-f0-9]{64}$/), size: z.number().int().nonnegative() })),
  requirements: z.looseObject({ minRootSlotSize: z.number().int().nonnegative() }),
  roothash: z.string().optional(),
  boot: ReleaseBootSchema.optional(),
  disk: z.looseObject({ esp: z.number().int().positive(), root: z.number().int().positive(), state: z.number().int().positive() }).optional(),
});

export function parseRelease(text: string, origin: string): Release {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new OssifyError(`${origin}: release.json is not valid JSON`, { cause: err });
  }
  const r = ReleaseSchema.safeParse(raw);
  if (!r.success) throw new OssifyError(`${origin}: release.json is invalid: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`);
  return r.data as Release;
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

  const payloadNames = [...PAYLOAD_REQUIRED, ...PAYLOAD_OPTIONAL.filter((n) => build.artifacts[n] !== undefined)];
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
  const site = build.artifacts[SITE_ARTIFACT];
  if (site) {
    const st = await stat(join(outDir, SITE_ARTIFACT)).catch(() => undefined);
    if (st?.size !== site.size) throw new InputError(`${outDir}/${SITE_ARTIFACT} is missing or not the size build.json records`, { hint: 'rebuild with ossify build' });
  }
  const { release, base: baseRelease } = releasesOfBuild(build, created, `${outDir}/build.json`);
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
    { type: 'file', path: `${PAYLOAD_DIR}/release.json`, mode: 0o644, content: textContent(baseReleaseText) },
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
          { type: 'file', path: `${PAYLOAD_DIR}/release.json`, mode: 0o644, content: textContent(releaseText) },
          { type: 'file', path: `${PAYLOAD_DIR}/${SITE_ARTIFACT}`, mode: 0o644, content: verifiedContent(join(outDir, SITE_ARTIFACT), SITE_ARTIFACT, site) },
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
