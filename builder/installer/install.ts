import { open, stat } from 'node:fs/promises';
import { execa } from 'execa';
import { buildEspTree } from '../boot/esp.ts';
import { abLayout, diskSizeFor, ESP_FAT_LABEL, espSerial, MiB, STATE_SEED_AREA, type DiskLayout } from '../disk/layout.ts';
import { assembleDisk } from '../disk/assemble.ts';
import { writeFat32 } from '../formats/fat/index.ts';
import { planPartitions, readGpt, writeGpt } from '../formats/gpt.ts';
import { bytesContent, hostFileContent } from '../tree/content.ts';
import { INITRAMFS, KERNEL, ROOTFS, ROOTFS_VERITY, SITE_SEED, ukiArtifact } from '../release/artifacts.ts';
import { InputError } from '../util/errors.ts';
import { seedRoom } from '../site/data.ts';
import { bootSettingsOfSource, loadSystemdBoot, NO_BOOT_RECORD } from './boot-settings.ts';
import { secureBootGap } from './boot-files.ts';
import { openDisk, partitionIo, type Disk } from './disk.ts';
import { probeLayout } from './layout.ts';
import { hostArch, normaliseArch } from '../arch.ts';
import { verifyRelease, type ReleaseSource } from './release.ts';
import { releaseSeed, type ReleaseSeed } from './site-seed.ts';
import { runInstallerSteps, type InstallerStep, type WriteMeter } from './steps.ts';
import { releaseUsesUki, writeRootImage } from './upgrade.ts';
import { checkReleaseVerity, releaseVerity, writeSlotVerity, type ReleaseVerity } from './verity.ts';

/**
 * Install: a new disk image file, or a blank disk (file or block device), gets the A/B
 * layout, an ESP with systemd-boot and slot A's kernel, initrd and blessed entry, and the
 * release in ROOT-A. A new file is made by the build's own disk assembly, so installing a
 * build output gives byte for byte the build's disk.raw (when the sizes are the same), from
 * its directory or from its installer image in a registry alike: the boot settings come from
 * the release's boot record (builder/installer/boot-settings.ts), and the ESP records nothing
 * about where the release came from (an upgrade's slot release.json names the image).
 * On an existing disk the GPT is invalidated first and written last: a killed install
 * leaves a disk that is plainly not an ossify disk, and rerunning the install finishes it.
 *
 * fleet (docs/fleet.md): a site release's `site.tar` goes at the start of STATE, as the build
 * writes it into its disk.raw: into the new image before it is renamed into place, or on an
 * existing disk before the partition table that makes it an ossify disk. The disk's GUIDs and
 * FAT serial derive from the release's base digest, so installing a site's build output gives
 * that site's disk.raw byte for byte too.
 */

export interface InstallOptions {
  disk: string;
  source: ReleaseSource;
  /** Size of a new (or growing) image file; a block device's size is its own. */
  size?: number;
  espSize?: number;
  rootSize?: number;
  /** Kernel arguments besides the slot's own. */
  cmdline?: string;
  /** A systemd-boot EFI binary (systemd-bootx64.efi, …aa64.efi) to use instead of the release build's or Debian's. */
  systemdBoot?: string;
  timeout?: number;
  /** Target architecture (default: this machine's). */
  arch?: string;
  /** Input cache, for fetching systemd-boot-efi when nothing else provides systemd-boot. */
  cacheDir: string;
  /** Overwrite a disk that already has a partition table. */
  force?: boolean;
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface InstallResult {
  disk: string;
  created: boolean;
  size: number;
  layout: DiskLayout;
  /** fleet: the site data written to STATE, when the release carries some. */
  site?: { name: string | undefined; bytes: number };
}

const SCHEMA_DEFAULTS = { esp: 256 * MiB, root: 512 * MiB, state: 64 * MiB };
const roundMiB = (n: number) => Math.ceil(n / MiB) * MiB;

/** fleet: what the build derived GUIDs and the FAT serial from (a site's base digest). */
const diskDigest = (src: ReleaseSource) => src.release.baseDigest ?? src.release.profileDigest;

interface Ctx {
  opts: InstallOptions;
  existing: boolean;
  disk?: Disk;
  diskSize?: number;
  layout?: DiskLayout;
  esp?: ReturnType<typeof buildEspTree>;
  verity?: ReleaseVerity | undefined;
  uki?: boolean;
  /** fleet: the release's site seed, for the start of STATE. */
  seed?: ReleaseSeed | undefined;
}

function chooseLayout(c: Ctx): DiskLayout {
  const { opts } = c;
  const src = opts.source;
  const r = src.release;
  // The release's build's sizes (a release made by an older ossify names none: the schema's defaults).
  const esp = roundMiB(opts.espSize ?? r.disk?.esp ?? SCHEMA_DEFAULTS.esp);
  const minRoot = Math.max(r.requirements.minRootSlotSize, r.artifacts[ROOTFS]!.size);
  const root = roundMiB(opts.rootSize ?? r.disk?.root ?? Math.max(SCHEMA_DEFAULTS.root, 2 * minRoot));
  const total = c.diskSize ?? opts.size;
  let state: number;
  if (total === undefined) state = roundMiB(r.disk?.state ?? SCHEMA_DEFAULTS.state);
  else state = Math.floor((total - 2 * MiB) / MiB) * MiB - esp - 2 * root;
  if (state < MiB) {
    const need = 2 * MiB + esp + 2 * root + MiB;
    throw new InputError(`${opts.disk}: ${total} bytes is too small for the layout (ESP ${esp}, two ${root}-byte root slots, STATE): at least ${need} bytes are needed`, {
      hint: 'pass a larger --size, or smaller --esp-size/--root-size',
    });
  }
  return abLayout({ profileDigest: diskDigest(src), arch: normaliseArch(r.arch), esp, root, state });
}

async function espTree(c: Ctx, log: (line: string) => void): Promise<ReturnType<typeof buildEspTree>> {
  const { opts } = c;
  const src = opts.source;
  const built = await bootSettingsOfSource(src);
  const arch = normaliseArch(src.release.arch);
  const cmdline = opts.cmdline ?? built.cmdline;
  if (c.uki && opts.cmdline !== undefined) log('--cmdline is ignored: a unified kernel image carries its own (signed) command line');
  if (cmdline === undefined && !c.uki) {
    // Booting without the profile's arguments (console=, panic=) looks like a hang: say so now.
    throw new InputError(`${src.release.name} ${src.release.version}: ${NO_BOOT_RECORD}, so the kernel arguments its build gave slot a are unknown`, {
      hint: 'pass --cmdline with the profile\'s kernel.cmdline (e.g. --cmdline "console=ttyS0 panic=5"), or rebuild and push the release with this ossify',
    });
  }
  const systemdBoot = opts.systemdBoot !== undefined || !built.systemdBoot ? await loadSystemdBoot({ ...(opts.systemdBoot !== undefined ? { file: opts.systemdBoot } : {}), arch, cacheDir: opts.cacheDir, log }) : built.systemdBoot;
  const a = src.release.artifacts;
  const gap = await secureBootGap(src, systemdBoot, c.uki === true);
  if (gap) log(gap);
  return buildEspTree({
    arch,
    systemdBoot: bytesContent(systemdBoot, 'systemd-boot'),
    ...(c.uki
      ? { uki: hostFileContent(src.path(ukiArtifact('a')), a[ukiArtifact('a')]!.size) }
      : { kernel: hostFileContent(src.path(KERNEL), a[KERNEL]!.size), initramfs: hostFileContent(src.path(INITRAMFS), a[INITRAMFS]!.size) }),
    entry: { slot: 'a', generation: 1, name: src.release.name, version: src.release.version, cmdline: cmdline ?? '', ...(c.verity ? { verity: c.verity } : {}) },
    timeout: opts.timeout ?? built.timeout ?? 0,
    epoch: src.epoch,
    ...(built.secureBoot && opts.systemdBoot === undefined ? { secureBoot: built.secureBoot } : {}),
  });
}

async function writeInPlace(c: Ctx, log: (line: string) => void): Promise<void> {
  const disk = c.disk!;
  const layout = c.layout!;
  const src = c.opts.source;
  const planned = planPartitions(disk.size, layout.partitions.map((p) => ({ name: p.label, typeGuid: p.typeGuid, guid: p.guid, size: p.size })));
  const at = (label: string) => {
    const p = planned.find((q) => q.name === label)!;
    return { offset: p.firstLba * 512, size: (p.lastLba - p.firstLba + 1) * 512, label };
  };
  // No partition table until everything it describes is in place.
  const zeros = new Uint8Array(MiB);
  await disk.write(0, zeros.subarray(0, 34 * 512));
  await disk.write(disk.size - 33 * 512, zeros.subarray(0, 33 * 512));
  await disk.sync();
  const rootA = at('ROOT-A');
  await writeRootImage(disk, rootA, src.path(ROOTFS), src.release.artifacts[ROOTFS]!.size);
  if (c.verity) await writeSlotVerity(disk, rootA.offset, src.release.artifacts[ROOTFS]!.size, c.verity);
  log(`ROOT-A: ${src.release.artifacts[ROOTFS]!.size} bytes${c.verity ? ' and its verity tree' : ''}`);
  // Whatever an earlier life of the disk left at the start of these must not be mistaken for
  // content: on STATE that is the seed area and the head of the /var file system behind it
  // (rootfs.os.var: state), so a reinstalled machine starts with an empty /var.
  for (const label of ['ROOT-B', 'STATE']) {
    const p = at(label);
    const head = label === 'STATE' ? STATE_SEED_AREA + MiB : MiB;
    for (let off = 0; off < Math.min(head, p.size); off += MiB) await disk.write(p.offset + off, zeros.subarray(0, Math.min(MiB, p.size - off)));
  }
  // fleet: the site's seed, as the build puts it into disk.raw (no partition table yet, so nothing reads it early).
  if (c.seed) {
    await disk.write(at('STATE').offset, c.seed.bytes);
    log(`STATE: site ${c.seed.name ?? '(unnamed)'}, ${c.seed.bytes.length} bytes of site data`);
  }
  const esp = at('ESP');
  const io = partitionIo(disk, esp);
  await writeFat32(c.esp!, { size: esp.size, label: ESP_FAT_LABEL, serial: espSerial(diskDigest(src)), hiddenSectors: esp.offset / 512, zeroed: false }, io);
  await disk.sync();
  log('ESP written');
  await writeGpt({ diskSize: disk.size, diskGuid: layout.diskGuid, partitions: planned }, { write: (o, d) => disk.write(o, d) });
  await disk.sync();
}

function steps(): InstallerStep<Ctx>[] {
  return [
    {
      name: 'check-target',
      async run(c, log) {
        if (!c.existing) return;
        const disk = c.disk!;
        const gpt = await readGpt((o, l) => disk.read(o, l), { diskSize: disk.size }).catch(() => undefined);
        if (gpt && !c.opts.force) {
          const ossify = await probeLayout(disk).then(
            () => true,
            () => false,
          );
          throw new InputError(
            ossify ? `${disk.path} already holds an ossify installation` : `${disk.path} has a partition table (${gpt.partitions.length} partitions)`,
            { hint: ossify ? 'use ossify upgrade to install a new release on it, or --force to wipe it' : 'pass --force to overwrite it (everything on it is lost)' },
          );
        }
        if (gpt) log(`overwriting the partition table of ${disk.path} (--force)`);
      },
    },
    {
      name: 'check-release',
      async run(c) {
        const arch = normaliseArch(c.opts.arch ?? hostArch());
        c.layout = chooseLayout(c);
        const root = c.layout.partitions.find((p) => p.label === 'ROOT-A')!.size;
        await verifyRelease(c.opts.source, { arch, rootSlotSize: root });
        c.uki = releaseUsesUki(c.opts.source);
        c.verity = await releaseVerity(c.opts.source);
        if (c.verity) await checkReleaseVerity(c.opts.source, c.verity);
        c.seed = await releaseSeed(c.opts.source);
        const state = c.layout.partitions.find((p) => p.label === 'STATE')!.size;
        if (c.seed && c.seed.bytes.length > seedRoom(state)) {
          throw new InputError(`the site data (${c.seed.bytes.length} bytes) does not fit the seed area of the STATE partition (${seedRoom(state)} bytes)`, { hint: 'pass a larger --size' });
        }
      },
    },
    {
      name: 'esp-tree',
      async run(c, log) {
        c.esp = await espTree(c, log);
      },
    },
    {
      name: 'write-disk',
      async run(c, log) {
        if (c.existing) {
          await writeInPlace(c, log);
          return;
        }
        await assembleDisk(c.opts.disk, {
          layout: c.layout!,
          esp: { tree: c.esp!, label: ESP_FAT_LABEL, serial: espSerial(diskDigest(c.opts.source)) },
          images: {
            'ROOT-A': [
              { path: c.opts.source.path(ROOTFS), offset: 0 },
              ...(c.verity ? [{ path: c.opts.source.path(ROOTFS_VERITY), offset: c.verity.hashOffset }] : []),
            ],
            // fleet: the seed is part of the new image before it gets its final name.
            ...(c.seed ? { STATE: [{ path: c.opts.source.path(SITE_SEED), offset: 0 }] } : {}),
          },
        });
        log(`${c.opts.disk}: ${diskSizeFor(c.layout!)} bytes${c.seed ? `, site ${c.seed.name ?? '(unnamed)'} in STATE` : ''}`);
      },
    },
  ];
}

export async function install(opts: InstallOptions): Promise<InstallResult> {
  const log = opts.log ?? (() => {});
  const st = await stat(opts.disk).catch(() => undefined);
  // An empty file is a new disk: it gets exactly what `ossify build` would have written.
  const ctx: Ctx = { opts, existing: st !== undefined && !(st.isFile() && st.size === 0) };
  if (ctx.existing && st?.isFile() && opts.size !== undefined && st.size < opts.size) {
    // Growing a blank image file is part of "a blank disk gets the layout".
    const fh = await open(opts.disk, 'r+');
    await fh.truncate(opts.size).finally(() => fh.close());
  }
  if (ctx.existing) {
    ctx.disk = await openDisk(opts.disk, { write: true });
    ctx.diskSize = ctx.disk.size;
  }
  const meter: WriteMeter = ctx.disk ?? { onWrite: undefined };
  try {
    await runInstallerSteps(steps(), ctx, meter, { log, ...(opts.env ? { env: opts.env } : {}) });
  } finally {
    await ctx.disk?.close();
  }
  if (ctx.disk?.blockDevice) {
    // Best effort: let the kernel see the new partitions without a reboot.
    const r = await execa('blockdev', ['--rereadpt', opts.disk], { reject: false });
    if (r.exitCode !== 0) log(`the kernel did not re-read the partition table (${r.stderr.trim() || r.exitCode}); it will at the next boot`);
  }
  return {
    disk: opts.disk,
    created: !ctx.existing,
    size: ctx.diskSize ?? diskSizeFor(ctx.layout!),
    layout: ctx.layout!,
    ...(ctx.seed ? { site: { name: ctx.seed.name, bytes: ctx.seed.bytes.length } } : {}),
  };
}
