import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { entryConf, entryFileName, rootLabel, slotDir, UKI_DIR, ukiFileName, type Slot } from '../boot/entries.ts';
import { INITRAMFS, KERNEL, RELEASE_JSON, ROOTFS, ukiArtifact } from '../release/artifacts.ts';
import type { FatEditor } from '../formats/fat/mutate.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { seedRoom } from '../site/data.ts';
import { bootSettingsOfSource, NO_BOOT_RECORD } from './boot-settings.ts';
import { planBootFiles, releaseBootFiles, writeBootFiles, type BootFilesPlan } from './boot-files.ts';
import { describeCounting, ENTRIES_DIR, otherSlot, readBootState, TEMP_SUFFIX, type BootState } from './boot-state.ts';
import { openDisk, partitionIo, type Disk } from './disk.ts';
import { cleanEsp, openEsp, putFileAtomic, stageFile } from './esp.ts';
import { probeLayout, type OssifyLayout } from './layout.ts';
import { verifyRelease, type ReleaseSource } from './release.ts';
import { checkStateForSeed, describeSeedChange, readStateSeed, releaseSeed, writeStateSeed, type ReleaseSeed } from './site-seed.ts';
import { runInstallerSteps, type InstallerStep } from './steps.ts';
import { checkReleaseVerity, releaseVerity, verifySlotVerity, writeSlotVerity, type ReleaseVerity } from './verity.ts';

/**
 * Upgrade: write a release into the slot that is not active and make it the next boot, on
 * trial. The active slot is the one that boots next (systemd-boot's order; on a running
 * device, the slot in /proc/cmdline); writes are fenced to the ESP and the other root
 * partition (and STATE, for a site release's data), so the active slot is never written.
 *
 * Steps (every write of a step is fsynced before the next step starts):
 *
 *  1. check-release  verify the source: every artifact's sha256, arch, fits the slot.
 *  2. plan           read the boot state, pick the target slot; stop if the release is
 *                    already the next boot (a rerun after the switch).
 *  3. clean-esp      drop leftovers of an interrupted run (temp files, leaked clusters).
 *  4. retire-entry   delete every loader entry of the target slot, and its release.json.
 *  5. write-root     copy the root image into ROOT-<target>; with dm-verity, then zeros to
 *                    the next 4 KiB and rootfs.verity (superblock + hash tree) there.
 *  6. verify-root    read it back from the disk and compare the sha256; with dm-verity,
 *                    recompute the hash tree over what the partition returns and compare
 *                    its root with the one release.json pins (and the tree with rootfs.verity).
 *  7. esp-files      replace ossify/<target>/{vmlinuz,initrd.img}, then add release.json;
 *                    each goes in under a temporary name, is read back and compared, then
 *                    renamed. (UKI releases: only release.json; the kernel is in the entry.)
 *     boot-files     the ESP's shared boot files (systemd-boot, loader.conf, Secure Boot keys
 *                    to enrol) become the release's, each replaced whole, boot loaders first
 *                    (builder/installer/boot-files.ts); only for a release that carries them.
 *  8. write-site     fleet: only for a release that carries site data (site.tar): put it at
 *                    the start of STATE, first block last (builder/installer/site-seed.ts).
 *                    Runs after plan even when the release is already installed, so a site
 *                    image with new site data and the same OS updates STATE alone.
 *  9. stage-entry    write the counted entry as ossify-<target>+N.conf.ossify-tmp (UKI:
 *                    the slot's unified kernel image as
 *                    EFI/Linux/ossify-<gen>-<target>+N.efi.ossify-tmp, read back and compared).
 * 10. switch         rename it to ossify-<target>+N.conf (ossify-<gen>-<target>+N.efi): one
 *                    directory-sector write.
 *
 * Why a kill at any point leaves a disk that boots the previous release:
 *
 * - systemd-boot only reads `loader/entries/*.conf` and `EFI/Linux/*.efi` (a temporary
 *   `.ossify-tmp` name is neither); the active slot's entry, kernel, initrd and root are never
 *   written, so it stays bootable throughout.
 * - Until step 10 the target slot has no `.conf` entry at all (step 4 removes it before its
 *   partition or kernel is touched), so nothing can boot a half-written slot, and the
 *   active entry sorts first.
 * - Step 10 is a single 512-byte write: the entry either does not exist (previous release
 *   boots) or exists complete, pointing at files that were written, verified and synced in
 *   steps 5–9. Its generation is max+1, so it sorts first while it has tries left; when the
 *   tries run out it sorts last and the previous release boots again.
 * - A kill inside a FAT change can leak clusters or leave a temporary file; neither is
 *   referenced by an entry, and step 3 of the next run removes them.
 * - The shared boot files serve both slots: each is old or new at every kill point, and plan
 *   refuses a boot loader or keys that a firmware enforcing Secure Boot would not follow from
 *   the disk's (see boot-files.ts), so either boot loader starts the previous release.
 * - STATE holds no slot's files, and its seed is either the old one, none (a marker block the
 *   rootfs init ignores) or the new one; a rerun finishes it. Both slots read the same seed:
 *   site data is the machine's, not a release's, so a fallback boots with the new site data.
 *   A release without site.tar leaves STATE alone (the machine keeps its site data).
 *
 * Rerunning after a kill repeats the same plan: the target has no entry (or a leftover
 * temporary one), so it is still "the other slot"; after step 10 the release is the next
 * boot and the rerun stops at step 2 (then finishes step 8, if a kill interrupted it).
 *
 * Limits: a kill is a process crash; on a power cut the guarantee rests on the medium
 * honouring fsync and writing 512-byte sectors atomically. Read-back verification of a
 * block device may be served from the page cache.
 */

export interface UpgradeOptions {
  disk: string;
  source: ReleaseSource;
  /** Boot attempts before the slot counts as bad (default: the release's boot.tries, else 3). */
  tries?: number;
  /** The slot the running system booted from; default: the slot that boots next. */
  runningSlot?: Slot;
  /** Kernel arguments besides the slot's own; default: the release's boot record, else (an older release) the active entry's. */
  cmdline?: string;
  /** Upgrade even while the next-boot slot is still on trial. */
  force?: boolean;
  /** fleet: write a site release's data even when STATE holds another site's. */
  replaceSite?: boolean;
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface UpgradeResult {
  slot: Slot;
  entryFile: string;
  generation: number;
  /** Boot attempts the new entry has (--tries, else the release's boot.tries, else 3). */
  tries: number;
  /** True when the release already was the next boot and nothing was written. */
  alreadyInstalled: boolean;
  timings: Record<string, number>;
  /** fleet: the site data of a release that carries some; `written` is false when STATE already held it. */
  site?: { name: string | undefined; written: boolean };
}

interface Ctx {
  opts: UpgradeOptions;
  disk: Disk;
  layout: OssifyLayout;
  esp: FatEditor;
  state?: BootState;
  active?: Slot | undefined;
  target?: Slot;
  generation?: number;
  tries?: number;
  entryFile?: string;
  entryText?: string;
  /** The release's dm-verity data, when it has some. */
  verity?: ReleaseVerity | undefined;
  /** The release boots from unified kernel images (uki-a.efi, uki-b.efi) instead of Type #1 entries. */
  uki?: boolean;
  /** What boot-files changes of the ESP's shared boot files (undefined: the release carries none). */
  boot?: BootFilesPlan | undefined;
  /** fleet: the release's site seed, for the start of STATE, and whether it was written. */
  seed?: ReleaseSeed | undefined;
  seedWritten?: boolean;
  done: boolean;
}

/** Where the entry file lives on the ESP for either form. */
const entryDir = (c: Ctx) => (c.uki ? UKI_DIR : ENTRIES_DIR);

/** Whether a release boots from UKIs; both slots' images must be there. */
export function releaseUsesUki(src: ReleaseSource): boolean {
  const have = [ukiArtifact('a'), ukiArtifact('b')].filter((n) => src.release.artifacts[n] !== undefined);
  if (have.length === 1) throw new InputError(`${src.release.name} ${src.release.version} ships ${have[0]} but not the other slot's UKI`);
  const uki = have.length === 2;
  const entries = src.release.boot?.entries;
  if (entries !== undefined && (entries === 'uki') !== uki) {
    throw new InputError(`${src.release.name} ${src.release.version}: its boot record says boot.entries ${entries}, but it ships ${uki ? '' : 'no '}unified kernel images`, { hint: 'rebuild the release with ossify build' });
  }
  return uki;
}

const CHUNK = 4 << 20;
const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** release.json as it goes on the ESP: the source's bytes, plus the image it was pulled from. */
export function slotReleaseJson(src: ReleaseSource): string {
  if (src.origin.kind !== 'image') return src.releaseJson;
  const line = `  "image": ${JSON.stringify(src.origin.reference)},`;
  return src.releaseJson.startsWith('{\n') ? `{\n${line}\n${src.releaseJson.slice(2)}` : `${JSON.stringify({ image: src.origin.reference, ...JSON.parse(src.releaseJson) }, null, 2)}\n`;
}

async function readFileBytes(path: string): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for await (const c of createReadStream(path)) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Streams the root image into the partition. */
export async function writeRootImage(disk: Disk, part: { offset: number; size: number; label: string }, image: string, size: number): Promise<void> {
  if (size > part.size) throw new InputError(`the root image (${size} bytes) does not fit ${part.label} (${part.size} bytes)`);
  let pos = 0;
  for await (const chunk of createReadStream(image, { highWaterMark: CHUNK })) {
    const buf = chunk as Buffer;
    if (pos + buf.length > size) throw new OssifyError(`${image} grew while being written`);
    await disk.write(part.offset + pos, buf);
    pos += buf.length;
  }
  if (pos !== size) throw new OssifyError(`${image} is ${pos} bytes, expected ${size}`);
  await disk.sync();
}

export async function hashDiskRange(disk: Disk, offset: number, size: number): Promise<string> {
  const h = createHash('sha256');
  for (let pos = 0; pos < size; pos += CHUNK) h.update(await disk.read(offset + pos, Math.min(CHUNK, size - pos)));
  return h.digest('hex');
}

function steps(): InstallerStep<Ctx>[] {
  const live = (c: Ctx) => !c.done;
  return [
    {
      name: 'check-release',
      async run(c) {
        await verifyRelease(c.opts.source, { arch: c.layout.arch, rootSlotSize: Math.min(c.layout.roots.a.size, c.layout.roots.b.size) });
        c.uki = releaseUsesUki(c.opts.source);
        c.verity = await releaseVerity(c.opts.source);
        if (c.verity) await checkReleaseVerity(c.opts.source, c.verity);
        c.seed = await releaseSeed(c.opts.source);
        if (c.seed) {
          const r = c.opts.source.release;
          if (!c.layout.state) throw new InputError(`${r.name} ${r.version} carries site data for the STATE partition, but ${c.disk.path} has none`, { hint: 'install the site release on a new disk with ossify install' });
          if (c.seed.bytes.length > seedRoom(c.layout.state.size)) throw new InputError(`the site data (${c.seed.bytes.length} bytes) does not fit the seed area of the STATE partition (${seedRoom(c.layout.state.size)} bytes)`);
        }
      },
    },
    {
      name: 'plan',
      async run(c, log) {
        const state = await readBootState(c.esp);
        const r = c.opts.source.release;
        const active = c.opts.runningSlot ?? state.next;
        c.state = state;
        c.active = active;
        // fleet: STATE is checked before anything is written, whether or not the slots change.
        if (c.seed) {
          const current = await readStateSeed(partitionIo(c.disk, { ...c.layout.state!, label: 'STATE' }));
          checkStateForSeed(c.disk.path, current, c.seed, { ...(c.opts.replaceSite ? { replaceSite: true } : {}) });
          log(describeSeedChange(current, c.seed));
        }
        // Only the ESP, the target root partition and (for site data) STATE may be written.
        const stateRange = c.seed ? [{ ...c.layout.state!, label: 'STATE' }] : [];
        const rootSha = hexOf(r.artifacts[ROOTFS]!.sha256);
        if (active && !c.opts.runningSlot) {
          const s = state.slots[active];
          let same = s.record?.version === r.version && s.record.name === r.name;
          if (same && s.record?.rootfsSha256 === undefined) {
            // A slot written by `ossify build` or `install` records no digest on the ESP: read it.
            same = (await hashDiskRange(c.disk, c.layout.roots[active].offset, r.artifacts[ROOTFS]!.size)) === rootSha;
          } else if (same) {
            same = s.record?.rootfsSha256 === rootSha;
          }
          if (same && s.entry && s.entry.counting.state !== 'bad') {
            log(`${r.name} ${r.version} is already in slot ${active} and boots next (${describeCounting(s.entry.counting)})`);
            c.target = active;
            c.entryFile = s.entry.file;
            c.generation = s.entry.generation;
            c.done = true;
            c.disk.restrictWrites(stateRange);
            return;
          }
          if (s.entry?.counting.state === 'trying' && !c.opts.force) {
            throw new InputError(`slot ${active} (${s.record?.version ?? 'unknown release'}) is still on trial (${s.entry.counting.left} ${s.entry.counting.left === 1 ? 'try' : 'tries'} left); upgrading now would overwrite slot ${otherSlot(active)}, the last release known to boot`, {
              hint: 'boot the disk first so the trial ends (blessed or fallen back), or pass --force',
            });
          }
        }
        const target = active ? otherSlot(active) : 'a';
        c.target = target;
        c.generation = state.maxGeneration + 1;
        const boot = await bootSettingsOfSource(c.opts.source);
        const tries = c.opts.tries ?? boot.tries ?? 3;
        c.tries = tries;
        // One disk, one form of entry: Type #1 and UKI entries do not sort against each other the way A/B needs.
        const other = state.order.find((e) => e.kind !== (c.uki ? 'uki' : 'type1'));
        if (other) {
          throw new InputError(
            `${r.name} ${r.version} boots from ${c.uki ? 'unified kernel images (boot.entries: uki)' : 'Type #1 entries (boot.entries: type1)'}, but this disk boots ${other.kind === 'uki' ? 'unified kernel images' : 'Type #1 entries'} (${other.file})`,
            { hint: 'keep boot.entries the same for every release of a disk, or install the release on a new disk with ossify install' },
          );
        }
        if (c.uki) {
          c.entryFile = ukiFileName(target, c.generation, { left: tries });
          if (c.opts.cmdline !== undefined) log('--cmdline is ignored: a unified kernel image carries its own (signed) command line');
        } else {
          c.entryFile = entryFileName(target, { left: tries });
          const running = active ? state.slots[active].entry?.extraCmdline : undefined;
          if (c.opts.cmdline === undefined && boot.cmdline === undefined) log(`${r.name} ${r.version}: ${NO_BOOT_RECORD}: slot ${target} gets the kernel arguments of slot ${active ?? 'none'} (${running || 'none'})`);
          const cmdline = c.opts.cmdline ?? boot.cmdline ?? running ?? '';
          c.entryText = entryConf({ slot: target, generation: c.generation, name: r.name, version: r.version, cmdline, ...(c.verity ? { verity: c.verity } : {}) });
        }

        // Room on the ESP: what is free now plus what the target's old files and leftovers give back.
        const sizes = c.uki
          ? [r.artifacts[ukiArtifact(target)]!.size, Buffer.byteLength(slotReleaseJson(c.opts.source))]
          : [r.artifacts[KERNEL]!.size, r.artifacts[INITRAMFS]!.size, Buffer.byteLength(slotReleaseJson(c.opts.source)), Buffer.byteLength(c.entryText!)];
        // The ESP's shared boot files, when the release carries them; refused here if a firmware enforcing Secure Boot could not follow.
        const bootFiles = await releaseBootFiles(c.opts.source);
        c.boot = bootFiles ? await planBootFiles(c.esp, bootFiles, { active: active ? state.slots[active].entry : undefined, release: `${r.name} ${r.version}` }) : undefined;
        if (!bootFiles) log('the release carries no boot loader (an installer image made by an older ossify): the disk\'s systemd-boot and loader.conf stay as they are');
        const need = sizes.reduce((n, s) => n + c.esp.allocationFor(s), 0) + 4 * c.esp.allocationFor(1) + (c.boot?.need ?? 0);
        let freed = 0;
        for (const path of [...['vmlinuz', 'initrd.img', RELEASE_JSON].map((f) => `${slotDir(target)}/${f}`), ...state.slots[target].entries.map((e) => e.path), ...state.leftovers]) {
          const st = await c.esp.stat(path);
          if (st) freed += c.esp.allocationFor(st.size);
        }
        if (need > c.esp.freeBytes() + freed) {
          throw new InputError(`the ESP has ${c.esp.freeBytes() + freed} bytes for slot ${target}'s kernel and initrd, ${need} are needed`, { hint: 'install onto a disk with a larger ESP (disk.esp in the profile)' });
        }
        log(`active slot ${active ?? 'none'}, writing ${r.name} ${r.version} to slot ${target} (${rootLabel(target)}), entry ${c.entryFile} generation ${c.generation}`);
        c.disk.restrictWrites([
          { ...c.layout.esp, label: 'ESP' },
          { ...c.layout.roots[target], label: rootLabel(target) },
          ...stateRange,
        ]);
      },
    },
    {
      name: 'clean-esp',
      when: live,
      async run(c, log) {
        for (const line of await cleanEsp(c.esp, c.state!)) log(line);
      },
    },
    {
      name: 'retire-entry',
      when: live,
      async run(c, log) {
        for (const e of (await readBootState(c.esp)).slots[c.target!].entries) {
          await c.esp.remove(e.path);
          log(`removed ${e.path}`);
        }
        // The slot must not claim, even to `status`, a release its partition no longer holds.
        await c.esp.remove(`${slotDir(c.target!)}/release.json`);
      },
    },
    {
      name: 'write-root',
      when: live,
      async run(c, log) {
        const a = c.opts.source.release.artifacts[ROOTFS]!;
        const part = c.layout.roots[c.target!];
        if (c.verity && c.verity.hashOffset + c.verity.tree.length > part.size) {
          throw new InputError(`the root image and its verity tree (${c.verity.hashOffset + c.verity.tree.length} bytes) do not fit ${rootLabel(c.target!)} (${part.size} bytes)`);
        }
        await writeRootImage(c.disk, { ...part, label: rootLabel(c.target!) }, c.opts.source.path(ROOTFS), a.size);
        if (c.verity) await writeSlotVerity(c.disk, part.offset, a.size, c.verity);
        log(`${a.size} bytes${c.verity ? `, verity tree ${c.verity.tree.length} bytes at ${c.verity.hashOffset}` : ''}`);
      },
    },
    {
      name: 'verify-root',
      when: live,
      async run(c) {
        const a = c.opts.source.release.artifacts[ROOTFS]!;
        const got = await hashDiskRange(c.disk, c.layout.roots[c.target!].offset, a.size);
        if (got !== hexOf(a.sha256)) throw new OssifyError(`${rootLabel(c.target!)} reads back as sha256 ${got}, ${hexOf(a.sha256)} was written: the disk is failing`);
        if (c.verity) await verifySlotVerity(c.disk, { offset: c.layout.roots[c.target!].offset, label: rootLabel(c.target!) }, c.verity);
      },
    },
    {
      name: 'esp-files',
      when: live,
      async run(c, log) {
        const dir = slotDir(c.target!);
        const mtime = c.opts.source.epoch;
        for (const f of ['vmlinuz', 'initrd.img']) await c.esp.remove(`${dir}/${f}`);
        await c.esp.mkdirp(dir, { mtime });
        if (!c.uki) {
          await putFileAtomic(c.esp, `${dir}/vmlinuz`, await readFileBytes(c.opts.source.path(KERNEL)), mtime);
          await putFileAtomic(c.esp, `${dir}/initrd.img`, await readFileBytes(c.opts.source.path(INITRAMFS)), mtime);
        }
        await putFileAtomic(c.esp, `${dir}/release.json`, Buffer.from(slotReleaseJson(c.opts.source)), mtime);
        log(c.uki ? `${dir}/release.json` : `${dir}/{vmlinuz,initrd.img,release.json}`);
      },
    },
    {
      name: 'boot-files',
      when: (c) => live(c) && (c.boot?.changes.length ?? 0) > 0,
      async run(c, log) {
        for (const line of await writeBootFiles(c.esp, c.boot!, c.opts.source.epoch)) log(line);
      },
    },
    {
      // fleet: also when the release is already installed (a site image with new site data).
      name: 'write-site',
      when: (c) => c.seed !== undefined,
      async run(c, log) {
        const io = partitionIo(c.disk, { ...c.layout.state!, label: 'STATE' });
        c.seedWritten = await writeStateSeed(io, c.seed!.bytes);
        log(c.seedWritten ? `STATE: site ${c.seed!.name ?? '(unnamed)'}, ${c.seed!.bytes.length} bytes written and verified` : `STATE already holds this site data (${c.seed!.name ?? 'unnamed'})`);
      },
    },
    {
      name: 'stage-entry',
      when: live,
      async run(c) {
        const bytes = c.uki ? await readFileBytes(c.opts.source.path(ukiArtifact(c.target!))) : Buffer.from(c.entryText!);
        if (c.uki) await c.esp.mkdirp(UKI_DIR, { mtime: c.opts.source.epoch });
        await stageFile(c.esp, `${entryDir(c)}/${c.entryFile!}${TEMP_SUFFIX}`, bytes, c.opts.source.epoch);
      },
    },
    {
      name: 'switch',
      when: live,
      async run(c, log) {
        await c.esp.rename(`${entryDir(c)}/${c.entryFile!}${TEMP_SUFFIX}`, c.entryFile!);
        log(`slot ${c.target} boots next: ${c.entryFile}`);
      },
    },
  ];
}

export async function upgrade(opts: UpgradeOptions): Promise<UpgradeResult> {
  const tries = opts.tries;
  if (tries !== undefined && (!Number.isInteger(tries) || tries < 1 || tries > 9)) throw new InputError(`--tries must be a whole number from 1 to 9, not ${opts.tries}`);
  const log = opts.log ?? (() => {});
  const disk = await openDisk(opts.disk, { write: true });
  try {
    const layout = await probeLayout(disk);
    const esp = await openEsp(disk, layout);
    const ctx: Ctx = { opts, disk, layout, esp, done: false };
    const timings = await runInstallerSteps(steps(), ctx, disk, { log, ...(opts.env ? { env: opts.env } : {}) });
    return {
      slot: ctx.target!,
      entryFile: ctx.entryFile!,
      generation: ctx.generation!,
      tries: ctx.tries ?? ctx.opts.tries ?? 3,
      alreadyInstalled: ctx.done,
      timings,
      ...(ctx.seed ? { site: { name: ctx.seed.name, written: ctx.seedWritten ?? false } } : {}),
    };
  } finally {
    await disk.close();
  }
}
