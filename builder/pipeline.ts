import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { LoadedProfile } from './profile/load.ts';
import { parseSize } from './profile/schema.ts';
import type { InputLock } from './inputs/index.ts';
import { DEFAULT_ARCH } from './arch.ts';
// verified boot: the boot settings the release records
import { releaseBootOf } from './boot/release-boot.ts';
import { fileDigest } from './util/sparse-hash.ts';
import { OssifyError } from './util/errors.ts';
import { runSteps, type ProgressMode } from './steps/progress.ts';
import { STEPS } from './steps/index.ts';
import { baseDigestOf, dedupeSources } from './steps/shared.ts';
import type { BuildCtx } from './steps/step.ts';
import { ARTIFACTS, BUILD_JSON, DISK, OPTIONAL_ARTIFACTS, SITE_SEED } from './release/artifacts.ts';
import { encodeBuildJson, type BuildRecord } from './release/build-json.ts';
import { buildInstallerImage } from './release/installer-image.ts';
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
// image formats: qcow2, vhd, vmdk, ova, gce written from the disk
import { resolveOutputs, type OutputSpec } from './outputs/index.ts';
import { writeOutputs } from './outputs/write.ts';

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
  const digest = async (path: string) => (await run.digestOf(basename(path))) ?? (await fileDigest(path, basename(path) === DISK ? run.value('diskExtents') : undefined));
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
    for (const a of [...OPTIONAL_ARTIFACTS, SITE_SEED]) {
      const path = join(work, a);
      const st = await stat(path).catch(() => undefined);
      if (st) artifacts[a] = await digest(path);
    }
    const p = loaded.profile;
    const t0 = performance.now();
    const disk = artifacts[DISK]!;
    const outputs = await writeOutputs(
      resolveOutputs(opts.outputs ?? p.outputs),
      {
        disk: { path: join(work, DISK), size: disk.size, sha256: disk.sha256, ...(diskExtents ? { extents: diskExtents } : {}) },
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
    await writeFile(join(work, BUILD_JSON), encodeBuildJson(record));
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
