import { parseVerityCmdline, rootLabel, SLOTS, type Slot } from '../boot/entries.ts';
import type { RELEASE_JSON } from '../release/artifacts.ts';
import { describeCounting, readBootState, type SlotState } from './boot-state.ts';
import { openDisk, partitionIo, type Disk } from './disk.ts';
import { openEsp } from './esp.ts';
import { probeLayout, type DiskPartition, type OssifyLayout } from './layout.ts';
import { readStateSeed } from './site-seed.ts';
import { hashDiskRange } from './upgrade.ts';
import { createHash } from 'node:crypto';
import { slotRootHash } from './verity.ts';
import { STATE_SEED_AREA } from '../disk/layout.ts';
import { EXT_SUPERBLOCK_OFFSET, EXT_SUPERBLOCK_SIZE, parseExtSuperblock } from '../formats/ext-superblock.ts';

/** What `ossify status` reports: the layout, each slot's release and entry, and the next boot. */
export interface StatusReport {
  disk: string;
  size: number;
  blockDevice: boolean;
  diskGuid: string;
  arch: string;
  partitions: DiskPartition[];
  slots: SlotStatus[];
  /** The slot systemd-boot boots next. */
  next: Slot | undefined;
  /** Entry files in the order systemd-boot tries them. */
  bootOrder: string[];
  /**
   * fleet: the site data at the start of STATE (absent when the disk has no STATE): a seed,
   * none, one an interrupted install left unfinished, or data ossify did not write.
   */
  site?: { state: 'seed' | 'empty' | 'pending' | 'other'; name?: string; size?: number; sha256?: string };
  /** The persistent /var behind STATE's seed area (rootfs.os.var: state), once a first boot has made it. */
  var?: { filesystem: 'ext2' | 'ext3' | 'ext4'; size: number; label: string; uuid: string };
  /** Things worth knowing that do not stop the disk from booting. */
  warnings: string[];
}

export interface SlotStatus {
  slot: Slot;
  partition: string;
  release:
    | {
        name: string;
        version: string;
        /** sha256 of the root image: recorded on the ESP, or read from the partition. */
        digest: string | undefined;
        arch?: string;
        profileDigest?: string;
        image?: string;
        recordedIn: typeof RELEASE_JSON | 'entry-title';
        /** With --verify: whether the partition holds the recorded root image. */
        verified?: boolean;
      }
    | undefined;
  /** dm-verity: the root hash the slot's entry pins (and the numbers the initramfs maps it with). */
  verity?: {
    roothash: string;
    hashOffset: number;
    dataBlocks: number;
    /** With --verify: whether the partition's data hashes to that root. */
    verified?: boolean;
  };
  entry:
    | {
        file: string;
        state: 'good' | 'trying' | 'bad';
        triesLeft?: number;
        triesDone?: number;
        generation: number;
        title: string | undefined;
      }
    | undefined;
  bootsNext: boolean;
}

const SQUASHFS_MAGIC = 0x73717368;

/** Size of the squashfs at the start of a partition, as the writer pads it (4 KiB), if there is one. */
async function squashfsSize(disk: Disk, part: DiskPartition): Promise<number | undefined> {
  const sb = Buffer.from(await disk.read(part.offset, 96));
  if (sb.readUInt32LE(0) !== SQUASHFS_MAGIC) return undefined;
  const used = Number(sb.readBigUInt64LE(40));
  const padded = Math.ceil(used / 4096) * 4096;
  return padded <= part.size ? padded : undefined;
}

async function slotStatus(disk: Disk, layout: OssifyLayout, s: SlotState, next: Slot | undefined, verify: boolean, warnings: string[]): Promise<SlotStatus> {
  const part = layout.roots[s.slot];
  let release: SlotStatus['release'];
  if (s.record) {
    let digest = s.record.rootfsSha256;
    let verified: boolean | undefined;
    if (digest === undefined || verify) {
      const size = s.record.rootfsSize ?? (await squashfsSize(disk, part));
      const actual = size === undefined ? undefined : await hashDiskRange(disk, part.offset, size);
      if (digest !== undefined) {
        verified = actual === digest;
        if (!verified) warnings.push(`slot ${s.slot}: ${part.label} does not hold the root image its release.json records`);
      }
      digest ??= actual;
    }
    release = {
      name: s.record.name,
      version: s.record.version,
      digest: digest === undefined ? undefined : `sha256:${digest}`,
      ...(s.record.arch !== undefined ? { arch: s.record.arch } : {}),
      ...(s.record.profileDigest !== undefined ? { profileDigest: s.record.profileDigest } : {}),
      ...(s.record.image !== undefined ? { image: s.record.image } : {}),
      recordedIn: s.record.source,
      ...(verified !== undefined ? { verified } : {}),
    };
  }
  // dm-verity: what the entry pins is what the initramfs will enforce.
  let verity: SlotStatus['verity'];
  const pinned = s.entry?.options ? parseVerityCmdline(s.entry.options) : undefined;
  if (pinned) {
    verity = { roothash: pinned.rootHash, hashOffset: pinned.hashOffset, dataBlocks: pinned.dataBlocks };
    if (s.record?.roothash !== undefined && s.record.roothash !== pinned.rootHash) {
      warnings.push(`slot ${s.slot}: its entry pins verity root ${pinned.rootHash}, its release.json ${s.record.roothash}`);
    }
    if (verify) {
      const ok = Number.isSafeInteger(pinned.dataBlocks) && pinned.dataBlocks > 0 && pinned.hashOffset + 4096 <= part.size && (await slotRootHash(disk, part.offset, pinned)) === pinned.rootHash;
      verity.verified = ok;
      if (!ok) warnings.push(`slot ${s.slot}: ${part.label} does not hash to the verity root its entry pins: the initramfs will refuse it`);
    }
  }
  const c = s.entry?.counting;
  return {
    slot: s.slot,
    partition: rootLabel(s.slot),
    release,
    ...(verity ? { verity } : {}),
    entry: s.entry && c
      ? {
          file: s.entry.file,
          state: c.state,
          ...(c.state === 'trying' ? { triesLeft: c.left, triesDone: c.done } : c.state === 'bad' ? { triesLeft: 0, triesDone: c.done } : {}),
          generation: s.entry.generation,
          title: s.entry.title,
        }
      : undefined,
    bootsNext: next === s.slot,
  };
}

export async function diskStatus(path: string, opts: { verify?: boolean } = {}): Promise<StatusReport> {
  const disk = await openDisk(path, { write: false });
  try {
    const layout = await probeLayout(disk);
    const esp = await openEsp(disk, layout);
    const state = await readBootState(esp);
    const warnings: string[] = [];
    if (!layout.backupValid) warnings.push('the backup GPT is damaged (the primary is intact)');
    for (const l of state.leftovers) warnings.push(`${l} is left from an interrupted install or upgrade (the next upgrade removes it)`);
    for (const p of await esp.check()) warnings.push(`ESP: ${p.kind} in ${p.path}: ${p.detail}`);
    const slots: SlotStatus[] = [];
    for (const slot of SLOTS) slots.push(await slotStatus(disk, layout, state.slots[slot], state.next, opts.verify ?? false, warnings));
    let site: StatusReport['site'];
    let varFs: StatusReport['var'];
    if (layout.state) {
      const io = partitionIo(disk, { ...layout.state, label: 'STATE' });
      if (io.size >= STATE_SEED_AREA + EXT_SUPERBLOCK_OFFSET + EXT_SUPERBLOCK_SIZE) {
        const sb = parseExtSuperblock(await io.read(STATE_SEED_AREA + EXT_SUPERBLOCK_OFFSET, EXT_SUPERBLOCK_SIZE));
        if (sb) varFs = { filesystem: sb.kind, size: sb.size, label: sb.label, uuid: sb.uuid };
      }
      const s = await readStateSeed(io);
      site = {
        state: s.kind,
        ...(s.name !== undefined ? { name: s.name } : {}),
        ...(s.bytes ? { size: s.bytes.length, sha256: `sha256:${createHash('sha256').update(s.bytes).digest('hex')}` } : {}),
      };
      if (s.kind === 'seed' && !s.bytes) warnings.push('STATE: the site data is damaged (not a complete tar archive); reinstall or upgrade from the site\'s image');
      if (s.kind === 'pending') warnings.push('STATE: a site data write was interrupted, so no site data is applied at boot; rerun the install or upgrade');
    }
    return {
      disk: path,
      size: disk.size,
      blockDevice: disk.blockDevice,
      diskGuid: layout.diskGuid,
      arch: layout.arch,
      partitions: layout.partitions,
      slots,
      next: state.next,
      bootOrder: state.order.map((e) => e.file),
      ...(site ? { site } : {}),
      ...(varFs ? { var: varFs } : {}),
      warnings,
    };
  } finally {
    await disk.close();
  }
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(n % (1 << 20) === 0 ? 0 : 1)} MiB`;

export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  lines.push(`disk ${r.disk}: ${mib(r.size)}${r.blockDevice ? ' block device' : ''}, GPT ${r.diskGuid}, ${r.arch}`);
  for (const p of r.partitions) lines.push(`  ${String(p.number).padStart(2)}  ${p.label.padEnd(8)} ${mib(p.offset).padStart(10)}  ${mib(p.size).padStart(10)}`);
  for (const s of r.slots) {
    const rel = s.release ? `${s.release.name} ${s.release.version}${s.release.digest ? `  rootfs ${s.release.digest.slice(0, 19)}…` : ''}${s.release.image ? `  from ${s.release.image}` : ''}` : 'no release';
    const e = s.entry ? `${describeCounting(s.entry.state === 'good' ? { state: 'good' } : s.entry.state === 'bad' ? { state: 'bad', done: s.entry.triesDone ?? 0 } : { state: 'trying', left: s.entry.triesLeft ?? 0, done: s.entry.triesDone ?? 0 })} (${s.entry.file}, generation ${s.entry.generation})` : 'no boot entry';
    lines.push(`slot ${s.slot} (${s.partition})${s.bootsNext ? '  ← boots next' : ''}`);
    lines.push(`  release: ${rel}`);
    if (s.verity) lines.push(`  verity:  root ${s.verity.roothash}${s.verity.verified === undefined ? '' : s.verity.verified ? ' (verified)' : ' (MISMATCH)'}`);
    lines.push(`  entry:   ${e}`);
  }
  if (r.site) {
    const what = { seed: `${r.site.name ?? 'unnamed site'}${r.site.size !== undefined ? ` (${r.site.size} bytes, ${r.site.sha256!.slice(0, 19)}…)` : ''}`, empty: 'none', pending: 'none (an interrupted write)', other: 'none (STATE holds other data)' }[r.site.state];
    lines.push(`site:    ${what}`);
  }
  if (r.var) lines.push(`var:     ${r.var.filesystem} on STATE, ${mib(r.var.size)}${r.var.label ? `, label ${r.var.label}` : ''}`);
  lines.push(r.next ? `next boot: slot ${r.next}` : 'next boot: nothing (no boot entries)');
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}
