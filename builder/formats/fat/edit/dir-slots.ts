import { OssifyError } from '../../../util/errors.ts';
import { DIRENT_SIZE } from '../dirent.ts';
import { DELETED, type Dir } from './dir-parse.ts';
import type { FatTable } from './table.ts';
import { SECTOR } from './volume.ts';

/** Slot-level changes to a directory: which sectors are written, in which order, and where a new run goes. */

const SLOTS_PER_SECTOR = SECTOR / DIRENT_SIZE;
const MAX_DIR_SLOTS = 65536;

function slotOffset(fat: FatTable, dir: Dir, slot: number): number {
  const { clusterSize } = fat.vol;
  return fat.vol.clusterPos(dir.chain[Math.floor((slot * DIRENT_SIZE) / clusterSize)]!) + ((slot * DIRENT_SIZE) % clusterSize);
}

/**
 * Writes the directory sectors that hold `slots` from the in-memory copy; the sector of
 * `keySlot` (the short entry) goes first when a name is removed, last when one is added.
 */
export async function writeDirSlots(fat: FatTable, dir: Dir, slots: number[], keySlot: number, keyOrder: 'first' | 'last'): Promise<void> {
  const sectors = [...new Set(slots.map((s) => Math.floor(s / SLOTS_PER_SECTOR)))].sort((a, b) => a - b);
  const key = Math.floor(keySlot / SLOTS_PER_SECTOR);
  const ordered = [...sectors.filter((s) => s === key && keyOrder === 'first'), ...sectors.filter((s) => s !== key), ...sectors.filter((s) => s === key && keyOrder === 'last')];
  for (const s of ordered) {
    const slot = s * SLOTS_PER_SECTOR;
    await fat.vol.dev.write(slotOffset(fat, dir, slot), dir.bytes.subarray(slot * DIRENT_SIZE, (slot + SLOTS_PER_SECTOR) * DIRENT_SIZE));
  }
}

const slotFree = (dir: Dir, i: number) => i >= dir.end || dir.bytes[i * DIRENT_SIZE] === DELETED;

/**
 * The lowest run of `n` free slots inside one sector (so writing it is atomic), extending
 * the directory by a cluster when none is left. Slots between the end marker and the run
 * are marked deleted first so readers that stop at the end marker still reach the run.
 */
export async function claimRun(fat: FatTable, dir: Dir, n: number, what: string): Promise<number> {
  const { dev, clusterSize } = fat.vol;
  for (;;) {
    for (let s = 0; s + n <= dir.slots; s++) {
      if (Math.floor(s / SLOTS_PER_SECTOR) !== Math.floor((s + n - 1) / SLOTS_PER_SECTOR)) continue;
      let ok = true;
      for (let k = s; k < s + n && ok; k++) ok = slotFree(dir, k);
      if (!ok) continue;
      if (s > dir.end) {
        const gap: number[] = [];
        for (let k = dir.end; k < s; k++) {
          dir.bytes.fill(0, k * DIRENT_SIZE, (k + 1) * DIRENT_SIZE);
          dir.bytes[k * DIRENT_SIZE] = DELETED;
          gap.push(k);
        }
        await writeDirSlots(fat, dir, gap, gap[0]!, 'first');
        await dev.sync();
        dir.end = s;
      }
      // What follows the run must read as the end of the directory (or be an entry).
      const after = s + n;
      if (after >= dir.end && after < dir.slots && dir.bytes[after * DIRENT_SIZE] !== 0) {
        dir.bytes.fill(0, after * DIRENT_SIZE, (after + 1) * DIRENT_SIZE);
        await writeDirSlots(fat, dir, [after], after, 'first');
        await dev.sync();
      }
      return s;
    }
    if (dir.slots + clusterSize / DIRENT_SIZE > MAX_DIR_SLOTS) throw new OssifyError(`FAT: directory ${JSON.stringify(dir.path || '/')} is full (${what})`);
    await growDir(fat, dir, what);
  }
}

/** Adds a zeroed cluster to the directory: written before the FAT links it in. */
async function growDir(fat: FatTable, dir: Dir, what: string): Promise<void> {
  const { dev, clusterSize } = fat.vol;
  const [c] = fat.pick(1, `directory ${JSON.stringify(dir.path || '/')} (${what})`);
  await dev.write(fat.vol.clusterPos(c!), new Uint8Array(clusterSize));
  await dev.sync();
  fat.set(dir.chain[dir.chain.length - 1]!, c!);
  fat.link([c!]);
  await fat.commit();
  dir.chain.push(c!);
  dir.bytes = Buffer.concat([dir.bytes, Buffer.alloc(clusterSize)]);
  dir.slots = dir.bytes.length / DIRENT_SIZE;
}

/** Puts a run of entries into the in-memory directory at `start`. */
export function placeRun(dir: Dir, start: number, run: Uint8Array[]): void {
  run.forEach((e, k) => dir.bytes.set(e, (start + k) * DIRENT_SIZE));
  dir.end = Math.max(dir.end, start + run.length);
}

/** Marks slots `from`..`to` deleted in memory; returns them for writeDirSlots. */
export function markDeleted(dir: Dir, from: number, to: number): number[] {
  const out: number[] = [];
  for (let k = from; k <= to; k++) {
    dir.bytes[k * DIRENT_SIZE] = DELETED;
    out.push(k);
  }
  return out;
}
