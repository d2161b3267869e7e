import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { LoadedProfile } from './profile/load.ts';
import { parseSize, type Input } from './profile/schema.ts';
import { inputOrigin, loadInput, type InputLock } from './inputs/index.ts';
import { applyTree } from './inputs/apply.ts';
import { programsTree } from './elf/index.ts';
import { loadKernel, resolveModules } from './kernel/index.ts';
import { buildInitramfs, buildInitramfsTree } from './initramfs/index.ts';
import { writeSquashfs } from './formats/squashfs/index.ts';
import { BOOT_ARTIFACTS, bootLoaderArtifact, buildEspTree, espBootFiles, SYSTEMD_EFI_DIR, type EspSpec } from './boot/esp.ts';
import { DEFAULT_ARCH, efiNames } from './arch.ts';
import { assertBinaryArch } from './arch-check.ts';
// verified boot: dm-verity slots, unified kernel images, Secure Boot signing
import { releaseBootOf, type ReleaseBoot } from './boot/release-boot.ts';
import { kernelCmdline, ukiArtifact, ukiOsRelease, SLOTS, type SlotVerity } from './boot/entries.ts';
import { buildUki } from './boot/uki.ts';
import { enrollmentFiles, loadSecureBootKeys, signWithDb, type SecureBootKeySet } from './boot/secureboot/profile.ts';
import { computeVerity, slotHashOffset, type VerityResult } from './formats/verity.ts';
import { abLayout } from './disk/layout.ts';
import { assembleDisk, type PlacedPartition } from './disk/assemble.ts';
import { FileTree } from './tree/tree.ts';
import { bytesContent, hostFileContent, readContent, textContent, type Content } from './tree/content.ts';
import { canonicalJson, sha256File } from './util/hash.ts';
import { writeFileAtomic } from './util/atomic.ts';
import { InputError, OssifyError } from './util/errors.ts';
import { runSteps, type ProgressMode, type Step } from './steps.ts';
import { buildInstallerImage } from './oci/installer-image.ts';
// trust: SBOM in the rootfs and beside the outputs, provenance beside the outputs, test-only nondeterminism hook
import { SBOM_FILE, addSbomToRootfs } from './trust/sbom.ts';
import { writeProvenance } from './trust/provenance.ts';
import { NONDETERMINISM_ENV, applyTestNondeterminism } from './reproducible.ts';
import { packageInfo } from './util/package-info.ts';
// fleet: the stage cache around the steps, and site data
import { StageRun, type StageStatus } from './cache/stages.ts';
import { StageCache } from './cache/store.ts';
import type { RemoteStageCache } from './cache/remote.ts';
import { cachedInstallerImage } from './cache/installer.ts';
import { SITE_SEED_FILE, siteTar, siteTree, writeSiteSeed } from './site/data.ts';
// image formats: qcow2, vhd, vmdk, ova, gce written from the disk
import { resolveOutputs, type OutputSpec } from './outputs/index.ts';
import { writeOutputs } from './outputs/write.ts';
import type { WrittenOutput } from './outputs/types.ts';
import { mergeExtents, type Extent } from './util/extents.ts';
// real OS: a full OS as the root (rootfs.os), and the check that its init runs on the arch
import { addOsIntegration, osReleaseText } from './rootfs/os.ts';
import { checkRootInit, type RootfsLayer } from './rootfs/init-check.ts';

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

export interface Ctx {
  loaded: LoadedProfile;
  work: string;
  cacheDir: string;
  lock?: InputLock;
  sources: SourceRecord[];
  kernelTree?: FileTree;
  kernelVersion?: string;
  vmlinuz?: Content;
  busybox?: Content;
  systemdBoot?: Content;
  // verified boot
  stub?: Content;
  verity?: VerityResult;
  secureBoot?: SecureBootKeySet;
  initramfs?: Uint8Array;
  rootfs?: FileTree;
  partitions?: PlacedPartition[];
  /** The byte ranges of disk.raw that were written (the rest is holes), for the output formats. */
  diskExtents?: Extent[];
}

async function fetchInput(ctx: Ctx, input: Input, log: (l: string) => void): Promise<FileTree> {
  const loaded = await loadInput(input, { cacheDir: ctx.cacheDir, log, arch: ctx.loaded.profile.arch, ...(ctx.lock ? { lock: ctx.lock } : {}) });
  ctx.sources.push(...loaded.sources);
  return loaded.tree;
}

function requireFile(tree: FileTree, path: string, what: string): Content {
  const e = tree.resolve(path);
  if (!e || e.type !== 'file') throw new InputError(`${what}: no ${path} in its input`);
  return e.content;
}

function osRelease(p: LoadedProfile): string {
  const { name, version } = p.profile;
  return [
    `NAME=${JSON.stringify(name)}`,
    'ID=ossify',
    `IMAGE_ID=${name}`,
    `IMAGE_VERSION=${version}`,
    `VERSION=${JSON.stringify(version)}`,
    // fleet: the base digest, so every site of one base has the same rootfs (equal to the digest without site data).
    `OSSIFY_PROFILE_DIGEST=${p.baseDigest ?? p.digest}`,
    '',
  ].join('\n');
}

/** An input's kernel, busybox or boot loader must run on the profile's architecture (`hint`: how to get one that does). */
async function checkArch(ctx: Ctx, content: Content, what: string, hint: string): Promise<void> {
  assertBinaryArch(await readContent(content), ctx.loaded.profile.arch, what, hint);
}

/** Directories every root needs as mount points, even when no input provides them. */
const ROOT_SKELETON = ['dev', 'proc', 'sys', 'run', 'tmp', 'mnt'];

function steps(profile: LoadedProfile['profile']): Step<Ctx>[] {
  // verified boot: the verity and uki steps only exist for profiles that ask for them.
  const wanted = (s: Step<Ctx>) => (s.name !== 'verity' || profile.rootfs.verity === true) && (s.name !== 'uki' || profile.boot.entries === 'uki');
  const all: Step<Ctx>[] = [
    {
      name: 'kernel input',
      async run(ctx, log) {
        const { tree, kernel: k } = await loadKernel(await fetchInput(ctx, ctx.loaded.profile.kernel.input, log), 'kernel.input');
        await checkArch(ctx, k.vmlinuz, `kernel.input: ${k.vmlinuzPath}`, 'use a kernel package of that architecture (e.g. linux-image-cloud-arm64 for aarch64)');
        ctx.kernelTree = tree;
        ctx.kernelVersion = k.version;
        ctx.vmlinuz = k.vmlinuz;
        log(`kernel ${k.version}`);
      },
    },
    {
      name: 'boot inputs',
      async run(ctx, log) {
        const p = ctx.loaded.profile;
        ctx.busybox = requireFile(await fetchInput(ctx, p.initramfs.busybox, log), 'bin/busybox', 'initramfs.busybox');
        await checkArch(ctx, ctx.busybox, 'initramfs.busybox: bin/busybox', 'use a static busybox of that architecture (deb: busybox-static is fetched for it)');
        const bootTree = await fetchInput(ctx, p.boot.systemdBoot, log);
        const efi = efiNames(p.arch);
        ctx.systemdBoot = requireFile(bootTree, `${SYSTEMD_EFI_DIR}/${efi.systemdBoot}`, 'boot.systemdBoot');
        // verified boot: systemd-stub ships in the same package as systemd-boot.
        await checkArch(ctx, ctx.systemdBoot, `boot.systemdBoot: ${efi.systemdBoot}`, 'use systemd-boot-efi of that architecture');
        if (p.boot.entries === 'uki') ctx.stub = requireFile(bootTree, `${SYSTEMD_EFI_DIR}/${efi.stub}`, 'boot.systemdBoot (for boot.entries: uki)');
        if (p.boot.secureBoot) ctx.secureBoot = await loadSecureBootKeys(p.boot.secureBoot.keys);
      },
    },
    {
      name: 'initramfs',
      async run(ctx, log) {
        const p = ctx.loaded.profile;
        const plan = await resolveModules(ctx.kernelTree!, ctx.kernelVersion!, p.kernel.modules);
        if (p.rootfs.verity) checkVerityTools(p, plan); // verified boot
        const programs = p.initramfs.programs?.length ? (await programsTree(p.initramfs.programs, 'initramfs.programs', (i) => fetchInput(ctx, i, log))).tree : undefined;
        const tree = buildInitramfsTree({ busybox: ctx.busybox!, modules: plan, kernelVersion: ctx.kernelVersion!, epoch: ctx.loaded.epoch, ...(programs ? { programs } : {}) });
        ctx.initramfs = await buildInitramfs(tree, p.initramfs.compression, p.initramfs.level);
        await writeFileAtomic(join(ctx.work, 'initramfs.img'), ctx.initramfs);
        log(`${plan.modules.length} modules, ${ctx.initramfs.length} bytes`);
      },
    },
    {
      name: 'rootfs tree',
      async run(ctx, log) {
        const p = ctx.loaded.profile;
        const root = new FileTree();
        const layers: RootfsLayer[] = [];
        // loadInput already placed each input under its target; applyTree keeps earlier inputs' directory symlinks.
        for (const input of p.rootfs.inputs) {
          const layer = { origin: inputOrigin(input), tree: await fetchInput(ctx, input, log) };
          applyTree(root, layer.tree, layer.origin);
          layers.push(layer);
        }
        if (p.rootfs.programs?.length) {
          const layer = { origin: 'rootfs.programs', tree: (await programsTree(p.rootfs.programs, 'rootfs.programs', (i) => fetchInput(ctx, i, log))).tree };
          applyTree(root, layer.tree, layer.origin);
          layers.push(layer);
        }
        for (const d of ROOT_SKELETON) root.ensureDir(d);
        // real OS: a full OS keeps its own os-release (ID=debian, …) with the image's identity added.
        const osRel = p.rootfs.os
          ? await osReleaseText(root, osRelease(ctx.loaded), { id: p.name, version: p.version, digest: baseDigestOf(ctx.loaded) })
          : osRelease(ctx.loaded);
        root.delete('etc/os-release');
        root.set('etc/os-release', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, content: textContent(osRel) });
        addOsIntegration(root, p);
        await checkRootInit(root, layers, p.arch);
        applyTestNondeterminism(root); // trust: test hook, a no-op unless OSSIFY_TEST_NONDETERMINISM=1
        root.normalise({ epoch: ctx.loaded.epoch, allRoot: p.rootfs.allRoot });
        ctx.rootfs = root;
        log(`${root.size} entries`);
      },
    },
    // trust: the SPDX SBOM of the finished rootfs goes into it and beside the outputs.
    {
      name: 'sbom',
      async run(ctx, log) {
        const { profile: p } = ctx.loaded;
        const bytes = await addSbomToRootfs(ctx.rootfs!, {
          name: p.name,
          version: p.version,
          arch: p.arch,
          profileDigest: ctx.loaded.baseDigest ?? ctx.loaded.digest, // fleet: shared by every site of a base
          epoch: ctx.loaded.epoch,
          builderVersion: packageInfo().version,
          sources: dedupeSources(ctx.sources),
        });
        await writeFileAtomic(join(ctx.work, SBOM_FILE), bytes);
        log(`${bytes.length} bytes`);
      },
    },
    {
      name: 'squashfs',
      async run(ctx, log) {
        const s = ctx.loaded.profile.rootfs.squashfs;
        const out = join(ctx.work, 'rootfs.squashfs');
        const opts: Parameters<typeof writeSquashfs>[2] = { compression: s.compression, blockSize: s.blockSize, mkfsTime: ctx.loaded.epoch };
        if (s.level !== undefined) opts.level = s.level;
        await writeSquashfs(ctx.rootfs!, out, opts);
        const size = (await stat(out)).size;
        const slot = parseSize(ctx.loaded.profile.disk.root);
        if (size > slot) {
          throw new InputError(`the rootfs (${size} bytes) is larger than a root slot (${slot} bytes)`, { hint: 'raise disk.root in the profile' });
        }
        log(`${size} bytes`);
      },
    },
    // verified boot: the hash tree of the squashfs, as it goes after it in a root slot.
    {
      name: 'verity',
      async run(ctx, log) {
        const squashfs = join(ctx.work, 'rootfs.squashfs');
        const size = (await stat(squashfs)).size;
        const v = await computeVerity(squashfs, { hashOffset: slotHashOffset(size) });
        const slot = parseSize(ctx.loaded.profile.disk.root);
        if (v.hashOffset + v.tree.length > slot) {
          throw new InputError(`the rootfs and its dm-verity tree (${v.hashOffset + v.tree.length} bytes) do not fit a root slot (${slot} bytes)`, { hint: 'raise disk.root in the profile' });
        }
        await writeFileAtomic(join(ctx.work, 'rootfs.verity'), v.tree);
        ctx.verity = v;
        log(`root hash ${v.rootHash}, ${v.dataBlocks} blocks, tree ${v.tree.length} bytes at ${v.hashOffset}`);
      },
    },
    {
      name: 'kernel',
      async run(ctx) {
        await writeFileAtomic(join(ctx.work, 'vmlinuz'), await readContent(ctx.vmlinuz!));
      },
    },
    // verified boot: one unified kernel image per slot (the command line names the slot), signed for Secure Boot.
    {
      name: 'uki',
      async run(ctx, log) {
        const p = ctx.loaded.profile;
        const stub = await readContent(ctx.stub!);
        const kernel = await readContent(ctx.vmlinuz!);
        const verity = slotVerity(ctx.verity);
        for (const slot of SLOTS) {
          let uki = buildUki({
            stub,
            kernel,
            initrd: ctx.initramfs!,
            cmdline: kernelCmdline(slot, p.kernel.cmdline, verity),
            osRelease: ukiOsRelease({ name: p.name, version: p.version, slot }),
            uname: ctx.kernelVersion!,
          });
          if (ctx.secureBoot) uki = await signWithDb(uki, ctx.secureBoot, p.boot.secureBoot?.signer);
          await writeFileAtomic(join(ctx.work, ukiArtifact(slot)), uki);
          log(`${ukiArtifact(slot)}: ${uki.length} bytes${ctx.secureBoot ? ', signed' : ''}`);
        }
      },
    },
    {
      name: 'disk',
      async run(ctx, log) {
        const p = ctx.loaded.profile;
        // verified boot: the slot's entry pins the verity root hash; a UKI replaces kernel + initrd; Secure Boot signs systemd-boot and adds the keys to enrol.
        const verity = slotVerity(ctx.verity);
        const file = async (name: string) => hostFileContent(join(ctx.work, name), (await stat(join(ctx.work, name))).size);
        const sb = p.boot.secureBoot;
        const shared: Pick<EspSpec, 'arch' | 'systemdBoot' | 'timeout' | 'secureBoot'> = {
          arch: p.arch,
          systemdBoot: ctx.secureBoot ? bytesContent(await signWithDb(await readContent(ctx.systemdBoot!), ctx.secureBoot, sb?.signer), `${bootLoaderArtifact(p.arch)} (signed)`) : ctx.systemdBoot!,
          timeout: p.boot.timeout,
          ...(ctx.secureBoot ? { secureBoot: { enroll: sb?.enroll ?? 'force', auth: enrollmentFiles(ctx.secureBoot, baseDigestOf(ctx.loaded), ctx.loaded.epoch) } } : {}),
        };
        // The installer image carries these, so an install or upgrade from a registry writes what this disk has.
        for (const [name, content] of Object.entries(espBootFiles(shared))) if (content) await writeFileAtomic(join(ctx.work, name), await readContent(content));
        const esp = buildEspTree({
          ...shared,
          ...(p.boot.entries === 'uki' ? { uki: await file(ukiArtifact('a')) } : { kernel: await file('vmlinuz'), initramfs: bytesContent(ctx.initramfs!) }),
          entry: { slot: 'a', generation: 1, name: p.name, version: p.version, cmdline: releaseBootOf(p, ctx.loaded.file).cmdline, ...(verity ? { verity } : {}) },
          epoch: ctx.loaded.epoch,
        });
        // fleet: GUIDs and the FAT serial from the base digest: every site of a base has this same disk, its seed aside.
        const layout = abLayout({
          profileDigest: baseDigestOf(ctx.loaded),
          arch: p.arch,
          esp: parseSize(p.disk.esp),
          root: parseSize(p.disk.root),
          state: parseSize(p.disk.state),
        });
        const written: Extent[] = [];
        ctx.partitions = await assembleDisk(join(ctx.work, 'disk.raw'), {
          layout,
          written,
          esp: { tree: esp, label: 'OSSIFY-ESP', serial: serialFrom(baseDigestOf(ctx.loaded)) },
          images: {
            'ROOT-A': [
              { path: join(ctx.work, 'rootfs.squashfs'), offset: 0 },
              ...(ctx.verity ? [{ path: join(ctx.work, 'rootfs.verity'), offset: ctx.verity.hashOffset }] : []),
            ],
          },
        });
        ctx.diskExtents = written;
        log(`${ctx.partitions.length} partitions`);
      },
    },
    // fleet: the site's data as a small tar, written at the start of the STATE partition (no-ops without `site:`).
    {
      name: 'site',
      async run(ctx, log) {
        const site = ctx.loaded.profile.site;
        if (!site) return;
        const tar = await siteTar(await siteTree(site, ctx.loaded.epoch, { networkd: ctx.loaded.profile.rootfs.os?.init === 'systemd' }), ctx.loaded.epoch);
        await writeFileAtomic(join(ctx.work, SITE_SEED_FILE), tar);
        log(`site ${site.name}: ${tar.length} bytes`);
      },
    },
    {
      name: 'site seed',
      async run(ctx, log) {
        if (!ctx.loaded.profile.site) return;
        const seed = await readFile(join(ctx.work, SITE_SEED_FILE));
        await writeSiteSeed(join(ctx.work, 'disk.raw'), ctx.partitions!, seed);
        const state = ctx.partitions!.find((p) => p.label === 'STATE');
        // A new array, so the stage cache sees the value change.
        if (ctx.diskExtents && state) ctx.diskExtents = mergeExtents([...ctx.diskExtents, { offset: state.offset, length: seed.length }]);
        log('seeded the STATE partition');
      },
    },
  ];
  return all.filter(wanted);
}

/** fleet: the digest the OS artifacts derive from: the profile's without its site data. */
function baseDigestOf(p: LoadedProfile): string {
  return p.baseDigest ?? p.digest;
}

// verified boot
function slotVerity(v: VerityResult | undefined): SlotVerity | undefined {
  return v ? { rootHash: v.rootHash, salt: v.salt, dataBlocks: v.dataBlocks, hashOffset: v.hashOffset } : undefined;
}

/** A verity root needs dm-verity in the initramfs and a dmsetup to map it; say how to add either. */
function checkVerityTools(p: LoadedProfile['profile'], plan: Awaited<ReturnType<typeof resolveModules>>): void {
  if (!plan.modules.some((m) => m.name === 'dm_verity') && !plan.builtin.includes('dm_verity')) {
    throw new InputError('rootfs.verity is on, but kernel.modules does not load dm_verity', { hint: 'add dm_verity to kernel.modules (its dependencies dm_mod, dm_bufio, … are added automatically)' });
  }
  if (!(p.initramfs.programs ?? []).some((prog) => /(^|\/)(dmsetup|veritysetup)$/.test(prog.path))) {
    throw new InputError('rootfs.verity is on, but the initramfs has no dmsetup to map the root', {
      hint: 'add to initramfs.programs:  - { path: sbin/dmsetup, from: { deb: dmsetup, depends: true } }',
    });
  }
}

/** The FAT volume serial, derived from the profile digest instead of the clock. */
function serialFrom(digest: string): number {
  return parseInt(digest.replace(/^sha256:/, '').slice(0, 8), 16) >>> 0;
}

export function outputDirFor(outRoot: string, loaded: LoadedProfile): string {
  // fleet: every site of one base has the base's name and version.
  const site = loaded.profile.site ? `-${loaded.profile.site.name}` : '';
  // One release built for two architectures has one name: the other one's outputs go beside.
  const arch = loaded.profile.arch === DEFAULT_ARCH ? '' : `-${loaded.profile.arch}`;
  return join(outRoot, `${loaded.profile.name}-${loaded.profile.version}${site}${arch}`);
}

/**
 * Builds every artifact into a temporary directory beside the final one and renames it into
 * place at the end: a killed build leaves nothing under `out/<name>-<version>/` half-written.
 */
export interface BuildResult {
  outDir: string;
  record: BuildRecord;
  /** The installer image in `<outDir>/oci/` (an OCI image layout). */
  installer: { manifestDigest: string; layoutDir: string };
  /** fleet: what the stage cache did for each step (hit, remote, miss; run: a step it does not know; off). */
  cache: Record<string, StageStatus>;
  /** fleet: what the stage cache worked around (a corrupt entry dropped, a registry that did not answer). */
  cacheWarnings: string[];
}

export async function build(loaded: LoadedProfile, opts: BuildOptions): Promise<BuildResult> {
  const outRoot = resolve(opts.outRoot);
  const finalDir = outputDirFor(outRoot, loaded);
  const work = join(outRoot, `.ossify-tmp-${process.pid}-${basename(finalDir)}`); // fleet: sites share name and version
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const ctx: Ctx = { loaded, work, cacheDir: resolve(opts.cacheDir ?? join(outRoot, 'cache')), sources: [], ...(opts.lock ? { lock: opts.lock } : {}) };
  // fleet: the stage cache; the test hook that makes builds differ must never be cached.
  const cacheOn = opts.stageCache !== false && process.env[NONDETERMINISM_ENV] !== '1';
  const stageCache = opts.stageCacheDir !== undefined ? StageCache.at(opts.stageCacheDir) : StageCache.open(ctx.cacheDir);
  const run = new StageRun(ctx, { ...(cacheOn ? { cache: stageCache } : {}), ...(opts.remoteCache ? { remote: opts.remoteCache } : {}) });
  // A digest the stage cache already knows (it verified or made the file) is not computed again: a disk is hundreds of MiB.
  const digest = async (path: string) => (await run.digestOf(basename(path))) ?? { sha256: await sha256File(path), size: (await stat(path)).size };
  try {
    const { timings } = await runSteps(run.wrap(steps(loaded.profile)), ctx, opts.progress);
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
        disk: { path: join(work, 'disk.raw'), size: disk.size, sha256: disk.sha256, ...(ctx.diskExtents ? { extents: ctx.diskExtents } : {}) },
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
      kernelVersion: ctx.kernelVersion!,
      artifacts,
      slots: { rootSize: parseSize(loaded.profile.disk.root) },
      // verified boot
      ...(ctx.verity
        ? { verity: { roothash: ctx.verity.rootHash, salt: ctx.verity.salt, hashOffset: ctx.verity.hashOffset, dataBlocks: ctx.verity.dataBlocks, dataBlockSize: ctx.verity.dataBlockSize, hashBlockSize: ctx.verity.hashBlockSize, algorithm: ctx.verity.algorithm } }
        : {}),
      boot: releaseBootOf(p, loaded.file),
      partitions: ctx.partitions!.map((p) => ({ label: p.label, guid: p.guid, typeGuid: p.typeGuid, offset: p.offset, size: p.size })),
      outputs,
      sources: dedupeSources(ctx.sources),
      timings,
      ...(p.site ? { baseDigest: baseDigestOf(loaded), site: { name: p.site.name } } : {}),
    };
    await writeFile(join(work, 'build.json'), `${JSON.stringify(record, null, 2)}\n`);
    // The installer image is made from build.json and the artifacts, so it comes last.
    const image = await cachedInstallerImage(run, ctx.busybox!, loaded.epoch, (layerCache) =>
      buildInstallerImage(work, { busybox: ctx.busybox!, epoch: loaded.epoch, force: true, ...(layerCache ? { layerCache } : {}) }),
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

function dedupeSources(sources: SourceRecord[]): SourceRecord[] {
  const seen = new Map<string, SourceRecord>();
  for (const s of sources) seen.set(canonicalJson(s), s);
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
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
