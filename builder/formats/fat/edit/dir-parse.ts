import { ATTR_DIRECTORY, ATTR_LFN, ATTR_VOLUME_ID, DIRENT_SIZE, epochFromFat } from '../dirent.ts';
import { caseFoldKey, decodeLfnChars, lfnChecksum, LOWER_BASE, LOWER_EXT } from '../names.ts';
import type { FatTable } from './table.ts';

export const DELETED = 0xe5;

/** One name in a directory, as the editor's callers see it. */
export interface FatEntry {
  path: string;
  name: string;
  /** `NAME.EXT` */
  shortName: string;
  isDir: boolean;
  attr: number;
  size: number;
  firstCluster: number;
  mtime: number;
}

export interface Entry extends FatEntry {
  shortRaw: string;
  /** First slot of the run (its first long-name entry, or the short entry). */
  firstSlot: number;
  shortSlot: number;
}

/** A directory read whole into memory; changes are made to `bytes`, then their sectors written. */
export interface Dir {
  path: string;
  /** 0 for the root's `..` convention; the cluster its entries live in otherwise. */
  firstCluster: number;
  isRoot: boolean;
  chain: number[];
  bytes: Buffer;
  entries: Entry[];
  /** Long-name entries not followed by their short entry: debris of an interrupted change. */
  orphans: { first: number; last: number }[];
  /** Slot of the end marker (first 0x00 name byte), or the slot count. */
  end: number;
  slots: number;
}

export const splitPath = (p: string) => p.split('/').filter(Boolean);
export const joinPath = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);
const latin1 = (b: Uint8Array) => Buffer.from(b).toString('latin1');

/** Reads the directory whose chain starts at `first`: its names, and the debris between them. */
export async function parseDir(fat: FatTable, path: string, first: number, isRoot: boolean): Promise<Dir> {
  const cs = fat.chain(first, JSON.stringify(path || '/'));
  const bytes = await fat.vol.readClusters(cs, cs.length * fat.vol.clusterSize);
  const slots = bytes.length / DIRENT_SIZE;
  const entries: Entry[] = [];
  const orphans: Dir['orphans'] = [];
  let end = slots;
  let lfn: { parts: string[]; expect: number; sum: number; first: number } | undefined;
  const orphan = (last: number) => {
    if (lfn) orphans.push({ first: lfn.first, last });
    lfn = undefined;
  };
  for (let i = 0; i < slots; i++) {
    const e = bytes.subarray(i * DIRENT_SIZE, (i + 1) * DIRENT_SIZE);
    if (e[0] === 0x00) {
      orphan(i - 1);
      end = i;
      break;
    }
    if (e[0] === DELETED) {
      orphan(i - 1);
      continue;
    }
    const attr = e[11]!;
    if ((attr & 0x3f) === ATTR_LFN) {
      const ord = e[0]! & 0x1f;
      const chars = decodeLfnChars(e).chars;
      if (e[0]! & 0x40) {
        orphan(i - 1);
        lfn = { parts: [], expect: ord, sum: e[13]!, first: i };
      } else if (!lfn || lfn.sum !== e[13] || ord !== lfn.expect) {
        orphan(i - 1);
        orphans.push({ first: i, last: i });
        continue;
      }
      if (ord === 0) {
        orphan(i);
        continue;
      }
      lfn.parts[ord - 1] = chars;
      lfn.expect = ord - 1;
      continue;
    }
    const raw = Uint8Array.from(e.subarray(0, 11));
    if (raw[0] === 0x05) raw[0] = DELETED;
    let long: string | undefined;
    let firstSlot = i;
    if (lfn) {
      if (lfn.expect === 0 && lfn.sum === lfnChecksum(raw)) {
        long = lfn.parts.join('');
        firstSlot = lfn.first;
        lfn = undefined;
      } else {
        orphan(i - 1);
      }
    }
    if (attr & ATTR_VOLUME_ID) continue;
    const base = latin1(raw.subarray(0, 8)).trimEnd();
    const ext = latin1(raw.subarray(8, 11)).trimEnd();
    const shortName = ext ? `${base}.${ext}` : base;
    if (shortName === '.' || shortName === '..') continue;
    const b = e[12]! & LOWER_BASE ? base.toLowerCase() : base;
    const x = e[12]! & LOWER_EXT ? ext.toLowerCase() : ext;
    const name = long ?? (x ? `${b}.${x}` : b);
    const dv = new DataView(e.buffer, e.byteOffset, DIRENT_SIZE);
    entries.push({
      path: joinPath(path, name),
      name,
      shortName,
      shortRaw: latin1(raw),
      isDir: (attr & ATTR_DIRECTORY) !== 0,
      attr,
      size: dv.getUint32(28, true),
      firstCluster: (dv.getUint16(20, true) << 16) | dv.getUint16(26, true),
      mtime: epochFromFat(dv.getUint16(24, true), dv.getUint16(22, true)),
      firstSlot,
      shortSlot: i,
    });
  }
  orphan(end - 1);
  return { path, firstCluster: first, isRoot, chain: cs, bytes, entries, orphans, end, slots };
}

export function rootDir(fat: FatTable): Promise<Dir> {
  return parseDir(fat, '', fat.vol.rootCluster, true);
}

/** The entry named `name` (long name case-folded, or its short name). */
export function findIn(dir: Dir, name: string): Entry | undefined {
  const key = caseFoldKey(name);
  return dir.entries.find((e) => caseFoldKey(e.name) === key || e.shortName === name.toUpperCase());
}

export function publicEntry(e: Entry): FatEntry {
  return {
    path: e.path,
    name: e.name,
    shortName: e.shortName,
    isDir: e.isDir,
    attr: e.attr,
    size: e.size,
    firstCluster: e.firstCluster,
    mtime: e.mtime,
  };
}
