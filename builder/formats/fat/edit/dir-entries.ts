import { OssifyError } from '../../../util/errors.ts';
import { encodeShortEntry } from '../dirent.ts';
import { assignShortNames, checkLongName, encodeLfnEntries, lfnChecksum, type ShortName } from '../names.ts';
import { FatFormatError } from '../reader.ts';
import { findIn, joinPath, parseDir, rootDir, splitPath, type Dir, type Entry } from './dir-parse.ts';
import { claimRun, placeRun, writeDirSlots } from './dir-slots.ts';
import type { FatTable } from './table.ts';

/** Names in directories: finding them by path, choosing short names, adding a name. */

export async function openDir(fat: FatTable, path: string): Promise<Dir> {
  let dir = await rootDir(fat);
  for (const seg of splitPath(path)) {
    const e = findIn(dir, seg);
    if (!e || !e.isDir) throw new FatFormatError(`no directory ${JSON.stringify(joinPath(dir.path, seg))}`);
    dir = await parseDir(fat, e.path, e.firstCluster, false);
  }
  return dir;
}

export function parentOf(path: string): { dir: string; name: string } {
  const segs = splitPath(path);
  const name = segs.pop();
  if (!name) throw new FatFormatError('the root directory cannot be changed this way');
  return { dir: segs.join('/'), name };
}

/** The directory holding `path`, and its entry when it exists. */
export async function lookupEntry(fat: FatTable, path: string): Promise<{ dir: Dir; entry: Entry | undefined }> {
  const { dir, name } = parentOf(path);
  const d = await openDir(fat, dir);
  return { dir: d, entry: findIn(d, name) };
}

/** The short name `name` gets in `dir` (numbered when another entry, not `except`, owns the plain one). */
export function shortNameFor(dir: Dir, name: string, except?: Entry): ShortName {
  checkLongName(name, joinPath(dir.path, name));
  const taken = new Set(dir.entries.filter((e) => e !== except).map((e) => e.shortRaw));
  const [s] = assignShortNames([name], dir.path);
  if (!taken.has(s!.raw)) return s!;
  // Another entry owns that short name: a numbered one, with the long name kept in LFN entries.
  const tilde = s!.raw.slice(0, 8).indexOf('~');
  const base = (tilde >= 0 ? s!.raw.slice(0, tilde) : s!.raw.slice(0, 8).trimEnd()) || '_';
  for (let k = 1; k <= 999_999; k++) {
    const tail = `~${k}`;
    const raw = (base.slice(0, 8 - tail.length) + tail).padEnd(8, ' ') + s!.raw.slice(8);
    if (!taken.has(raw)) return { raw, caseFlags: 0, needsLfn: true };
  }
  throw new OssifyError(`FAT: no free short name for ${JSON.stringify(name)} in ${JSON.stringify(dir.path || '/')}`);
}

/** The entries of one name: its long-name entries (if any), then the short entry. */
export function encodeRun(name: string, short: ShortName, shortEntry: Uint8Array): Uint8Array[] {
  const e = Uint8Array.from(shortEntry);
  for (let i = 0; i < 11; i++) e[i] = short.raw.charCodeAt(i);
  e[12] = short.caseFlags;
  if (!short.needsLfn) return [e];
  return [...encodeLfnEntries(name, lfnChecksum(e.subarray(0, 11))), e];
}

/** Adds a name to `dir`, its short entry's sector written last (the name appears in one write). */
export async function addEntry(fat: FatTable, dir: Dir, name: string, entry: Omit<Parameters<typeof encodeShortEntry>[0], 'raw' | 'caseFlags'>): Promise<void> {
  if (findIn(dir, name)) throw new OssifyError(`FAT: ${JSON.stringify(joinPath(dir.path, name))} already exists`);
  const short = shortNameFor(dir, name);
  const run = encodeRun(name, short, encodeShortEntry({ ...entry, raw: short.raw, caseFlags: short.caseFlags }));
  const start = await claimRun(fat, dir, run.length, joinPath(dir.path, name));
  placeRun(dir, start, run);
  const slots = run.map((_, k) => start + k);
  await writeDirSlots(fat, dir, slots, start + run.length - 1, 'last');
  await fat.vol.dev.sync();
}
