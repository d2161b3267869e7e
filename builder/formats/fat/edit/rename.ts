import { OssifyError } from '../../../util/errors.ts';
import { DIRENT_SIZE } from '../dirent.ts';
import { FatFormatError } from '../reader.ts';
import { findIn, joinPath } from './dir-parse.ts';
import { encodeRun, lookupEntry, shortNameFor } from './dir-entries.ts';
import { claimRun, markDeleted, placeRun, writeDirSlots } from './dir-slots.ts';
import type { FatTable } from './table.ts';

/** Renames within the file's directory: one sector write when the new run fits the old one. */
export async function rename(fat: FatTable, path: string, newName: string): Promise<void> {
  const { dev } = fat.vol;
  const { dir, entry } = await lookupEntry(fat, path);
  if (!entry) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
  const clash = findIn(dir, newName);
  if (clash && clash !== entry) throw new OssifyError(`FAT: ${JSON.stringify(joinPath(dir.path, newName))} already exists`);
  const short = shortNameFor(dir, newName, entry);
  const old = dir.bytes.subarray(entry.shortSlot * DIRENT_SIZE, (entry.shortSlot + 1) * DIRENT_SIZE);
  const run = encodeRun(newName, short, old);
  const have = entry.shortSlot - entry.firstSlot + 1;
  if (run.length <= have) {
    // In place: one sector when the old run lies in one (always true for runs made here).
    placeRun(dir, entry.firstSlot, run);
    const slots = [...run.map((_, k) => entry.firstSlot + k), ...markDeleted(dir, entry.firstSlot + run.length, entry.shortSlot)];
    await writeDirSlots(fat, dir, slots, entry.firstSlot, 'first');
    await dev.sync();
    return;
  }
  // Does not fit: the new run first, then the old one deleted. A crash in between leaves
  // two names for one chain, which `check` reports as a cross-link.
  const start = await claimRun(fat, dir, run.length, joinPath(dir.path, newName));
  placeRun(dir, start, run);
  await writeDirSlots(fat, dir, run.map((_, k) => start + k), start + run.length - 1, 'last');
  await dev.sync();
  const gone = markDeleted(dir, entry.firstSlot, entry.shortSlot);
  await writeDirSlots(fat, dir, gone, entry.shortSlot, 'first');
  await dev.sync();
}
