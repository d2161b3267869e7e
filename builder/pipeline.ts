import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { LoadedProfile } from './profile/load.ts';
import { parseSize } from './profile/schema.ts';
import type { InputLock } from './inputs/index.ts';
import { BOOT_ARTIFACTS } from './boot/esp.ts';
import { DEFAULT_ARCH } from './arch.ts';
// verified boot: the boot settings the release records
import { releaseBootOf, type ReleaseBoot } from './boot/release-boot.ts';
import { fileDigest } from './util/sparse-hash.ts';
import { OssifyError } from './util/errors.ts';
import { runSteps, type ProgressMode } from './steps/progress.ts';
import { STEPS } from './steps/index.ts';
import { baseDigestOf, dedupeSources } from './steps/shared.ts';
import type { BuildCtx } from './steps/step.ts';
import { buildInstallerImage } from './oci/installer-image.ts';
// trust: provenance beside the outputs, the SBOM the sbom step wrote, the test-only nondeterminism hook
import { SBOM_FILE } from './trust/sbom.ts';
import { writeProvenance } from './trust/provenance.ts';
import { NONDETERMINISM_ENV } from './reproducible.ts';
import { packageInfo } from './util/package-info.ts';
// fleet: the stage cache around the steps, and site data
import { StageRun, type StageStatus } from './cache/stages.ts';
import { StageCache } from './cache/store.ts';
import type { RemoteStageCache } from './cache/remote.ts';
import { cachedInstallerImage } from './cache/installer.ts';
import { SITE_SEED_FILE } from './site/data.ts';
// image formats: qcow2, vhd, vmdk, ova, gce written from the disk
import { resolveOutputs, type OutputSpec } from './outputs/index.ts';
import { writeOutputs } from './outputs/write.ts';
import type { WrittenOutput } from './outputs/types.ts';

/**
 * The build: the declared steps (builder/steps/) in order, each behind the stage cache, into a
 * build directory; then what is made from their files: the image formats, build.json, the
 * installer image and the provenance.
 */

export interface BuildOptions {
  outRoot: string;
  cacheDir?: string;
  progress: ProgressMode;
  /** The profile's lock file (builder/lock), when the build follows one. */
  lock?: InputLock;
  /** fleet: false runs every step (`--no-cache`); default: the stage cache in `<cacheDir>/stages`. */
  stageCache?: boolean;
  /** fleet: the stage cache's directory, when not `<cacheDir>/stages` (tests, benchmarks). */
  stageCacheDir?: string;
  /** fleet: registries stage records are read from and written to (`--cache-from`, `--cache-to`). */
  remoteCache?: { from?: RemoteStageCache; to?: RemoteStageCache };
  /** Image formats to write from the disk instead of the profile's `outputs:` (`--output`). */
  outputs?: OutputSpec[];
}

export interface SourceRecord {
  kind: string;
  name: string;
  version?: string;
  sha256?: string;
}

/** What `build.json` holds: the record of one build, and the contract with push/install. */
export interface BuildRecord {
  name: string;
  version: string;
  arch: string;
  profileDigest: string;
  epoch: number;
  kernelVersion: string;
  artifacts: Record<string, { sha256: string; size: number }>;
  slots: { rootSize: number };
  /** verified boot: the dm-verity tree of rootfs.squashfs (artifact rootfs.verity), when the profile asks for it. */
  verity?: BuildVerity;
  /** How the release boots (entries, kernel arguments, timeout, tries, Secure Boot enrolment): release.json carries it to every installer. */
  boot: ReleaseBoot;
  partitions: { label: string; guid: string; typeGuid: string; offset: number; size: number }[];
  /** The disk in each image format the build wrote (`outputs:`), each with its sha256. */
  outputs: WrittenOutput[];
  sources: SourceRecord[];
  timings: Record<string, number>;
  /** fleet: a site build's profile digest without its site data (what its OS artifacts derive from), and the site. */
  baseDigest?: string;
  site?: { name: string };
}

export const ARTIFACTS = ['rootfs.squashfs', 'vmlinuz', 'initramfs.img', 'disk.raw'] as const;

/**
 * verified boot. `rootfs.verity` is the verity superblock and hash tree, written at
 * `hashOffset` of a root slot (the squashfs zero-padded to 4 KiB before it); `uki-<slot>.efi`
 * are the unified kernel images of each slot (their command lines differ in the slot), signed
 * for Secure Boot when the profile says so. The ESP's shared boot files (systemd-boot as the ESP
 * holds it, loader.conf, the Secure Boot keys to enrol: BOOT_ARTIFACTS in boot/esp.ts) are
 * artifacts too, so the installer image carries them.
 */
export const OPTIONAL_ARTIFACTS = ['rootfs.verity', 'uki-a.efi', 'uki-b.efi', ...BOOT_ARTIFACTS] as const;

export interface BuildVerity {
  roothash: string;
  salt: string;
  /** Bytes from the start of a root slot to the verity superblock. */
  hashOffset: number;
  dataBlocks: number;
  dataBlockSize: number;
  hashBlockSize: number;
  algorithm: 'sha256';
}

export function outputDirFor(outRoot: string, loaded: LoadedProfile): string {
  // fleet: every site of one base has the base's name and version.
  const site = loaded.profile.site ? `-${loaded.profile.site.name}` : '';
  // One release built for two architectures has one name: the other one's outputs go beside.
  const arch = loaded.profile.arch === DEFAULT_ARCH ? '' : `-${loaded.profile.arch}`;
  return join(outRoot, `${loaded.profile.name}-${loaded.profile.version}${site}${arch}`);
}

export interface BuildResult {
  outDir: string;
  record: BuildRecord;
  /** The installer image in `<outDir>/oci/` (an OCI image layout). */
  installer: { manifestDigest: string; layoutDir: string };
  /** fleet: what the stage cache did for each step that applies, and the installer image (hit, remote, miss; off: no cache). */
  cache: Record<string, StageStatus>;
  /** fleet: what the stage cache worked around (a corrupt entry dropped, a registry that did not answer). */
  cacheWarnings: string[];
}

/**
 * Builds a profile into `out/<name>-<version>[-<site>][-<arch>]/` (outputDirFor): runs the steps
 * that apply to it (builder/steps/index.ts) behind the stage cache in a temporary directory
 * beside the final one, writes the image formats, build.json, the installer image (`oci/`) and
 * the provenance there, and renames it into place only then: a failed or killed build leaves
 * nothing half-written under the final name. With `--cache-to`, pushes the stages afterwards.
 */
export async function build(loaded: LoadedProfile, opts: BuildOptions): Promise<BuildResult> {
  const outRoot = resolve(opts.outRoot);
  const finalDir = outputDirFor(outRoot, loaded);
  const work = join(outRoot, `.ossify-tmp-${process.pid}-${basename(finalDir)}`); // fleet: sites share name and version
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const ctx: BuildCtx = { loaded, work, cacheDir: resolve(opts.cacheDir ?? join(outRoot, 'cache')), ...(opts.lock ? { lock: opts.lock } : {}) };
  // fleet: the stage cache; the test hook that makes builds differ must never be cached.
  const cacheOn = opts.stageCache !== false && process.env[NONDETERMINISM_ENV] !== '1';
  const stageCache = opts.stageCacheDir !== undefined ? StageCache.at(opts.stageCacheDir) : StageCache.open(ctx.cacheDir);
  const run = new StageRun(ctx, STEPS, { ...(cacheOn ? { cache: stageCache } : {}), ...(opts.remoteCache ? { remote: opts.remoteCache } : {}) });
  // A digest the stage cache already knows (it verified or made the file) is not computed again: a disk is hundreds of MiB.
  // The disk's holes are hashed as the zeros they read as, not read: only its written ranges are.
  const digest = async (path: string) => (await run.digestOf(basename(path))) ?? (await fileDigest(path, basename(path) === 'disk.raw' ? run.value('diskExtents') : undefined));
  try {
    const { timings } = await runSteps(run.tasks(), opts.progress);
    const verity = run.value('verity');
    const diskExtents = run.value('diskExtents');
    const busybox = run.made('busybox');
    const artifacts: BuildRecord['artifacts'] = {};
    for (const a of ARTIFACTS) {
      const path = join(work, a);
      artifacts[a] = await digest(path);
    }
    // verified boot: rootfs.verity and the UKIs, when this build made them.
    for (const a of [...OPTIONAL_ARTIFACTS, SITE_SEED_FILE]) {
      const path = join(work, a);
      const st = await stat(path).catch(() => undefined);
      if (st) artifacts[a] = await digest(path);
    }
    const p = loaded.profile;
    const t0 = performance.now();
    const disk = artifacts['disk.raw']!;
    const outputs = await writeOutputs(
      resolveOutputs(opts.outputs ?? p.outputs),
      {
        disk: { path: join(work, 'disk.raw'), size: disk.size, sha256: disk.sha256, ...(diskExtents ? { extents: diskExtents } : {}) },
        build: { name: p.name, version: p.version, arch: p.arch, epoch: loaded.epoch, profileDigest: loaded.digest },
        dir: work,
      },
      opts.progress === 'silent' ? undefined : (line) => process.stderr.write(`  outputs: ${line}\n`),
    );
    timings.outputs = Math.round(performance.now() - t0);
    const record: BuildRecord = {
      name: loaded.profile.name,
      version: loaded.profile.version,
      arch: loaded.profile.arch,
      profileDigest: loaded.digest,
      epoch: loaded.epoch,
      kernelVersion: run.made('kernelVersion'),
      artifacts,
      slots: { rootSize: parseSize(loaded.profile.disk.root) },
      // verified boot
      ...(verity
        ? { verity: { roothash: verity.rootHash, salt: verity.salt, hashOffset: verity.hashOffset, dataBlocks: verity.dataBlocks, dataBlockSize: verity.dataBlockSize, hashBlockSize: verity.hashBlockSize, algorithm: verity.algorithm } }
        : {}),
      boot: releaseBootOf(p, loaded.file),
      partitions: run.made('partitions').map((p) => ({ label: p.label, guid: p.guid, typeGuid: p.typeGuid, offset: p.offset, size: p.size })),
      outputs,
      sources: dedupeSources(run.sources()),
      timings,
      ...(p.site ? { baseDigest: baseDigestOf(loaded), site: { name: p.site.name } } : {}),
    };
    await writeFile(join(work, 'build.json'), `${JSON.stringify(record, null, 2)}\n`);
    // The installer image is made from build.json and the artifacts, so it comes last.
    const image = await cachedInstallerImage(run, busybox, loaded.epoch, (layerCache) =>
      buildInstallerImage(work, { busybox, epoch: loaded.epoch, force: true, ...(layerCache ? { layerCache } : {}) }),
    );
    // trust: the in-toto provenance names the artifacts, the SBOM and the installer image, so it is written last.
    await writeProvenance(
      work,
      { name: record.name, version: record.version, arch: record.arch, profileDigest: record.profileDigest, profileFile: loaded.file, epoch: record.epoch, artifacts: { ...record.artifacts, ...Object.fromEntries(outputs.map((o) => [o.file, o])) }, installerDigest: image.manifestDigest, sources: record.sources, builderVersion: packageInfo().version },
      join(work, SBOM_FILE),
    );
    await replaceDir(work, finalDir);
    await run.pushRemote(); // fleet: --cache-to, once the build succeeded
    return { outDir: finalDir, record, installer: { manifestDigest: image.manifestDigest, layoutDir: join(finalDir, 'oci') }, cache: run.status, cacheWarnings: run.warnings };
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}

async function replaceDir(from: string, to: string): Promise<void> {
  const old = `${to}.ossify-old-${process.pid}`;
  let hadOld = false;
  try {
    await rename(to, old);
    hadOld = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new OssifyError(`cannot replace ${to}`, { cause: err });
  }
  await rename(from, to);
  if (hadOld) await rm(old, { recursive: true, force: true });
}
