import type { Content } from '../../tree/content.ts';
import type { FileTree, Meta } from '../../tree/tree.ts';
import type { BlockSink } from '../../util/sink.ts';
import { InputError, OssifyError } from '../../util/errors.ts';
import { ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_VOLUME_ID, DIRENT_SIZE, encodeShortEntry } from './dirent.ts';
import { clusterOffset, fatGeometry, NUM_FATS, ROOT_CLUSTER, SECTOR, type FatGeometry } from './geometry.ts';
import { assignShortNames, checkLongName, encodeLabel, encodeLfnEntries, lfnChecksum, lfnEntryCount, type ShortName } from './names.ts';

export interface Fat32Options {
  /** Volume size in bytes, a multiple of 512 (the partition size). */
  size: number;
  /** Up to 11 characters; stored uppercase. `''` means no label. */
  label: string;
  /** Volume serial number (32 bits), derived by the caller from content, never random. */
  serial: number;
  /** Sectors preceding the volume on its disk (the partition's first LBA); 0 for a bare image. */
  hiddenSectors?: number;
  /** Bytes per cluster; defaults to what mkfs.fat picks for the size. */
  clusterSize?: number;
  /**
   * True (default) when unwritten bytes of the target read as zero (a new sparse file):
   * only non-zero regions are written. False for reused media: the whole FAT is written.
   */
  zeroed?: boolean;
}

export interface Fat32Result {
  /** Data clusters in the volume. */
  clusters: number;
  clusterSize: number;
  /** Bytes of clusters allocated to directories and files. */
  usedBytes: number;
}

const EOC = 0x0fff_ffff;
const MAX_DIR_ENTRIES = 65536;
const MAX_FILE_SIZE = 0xffff_ffff;
const CHUNK = 1 << 20;

interface DirPlan {
  path: string;
  meta: Meta;
  parent: DirPlan | undefined;
  children: Child[];
  clusters: number;
  firstCluster: number;
}

interface FilePlan {
  path: string;
  content: Content;
  clusters: number;
  firstCluster: number;
}

interface Child {
  name: string;
  short: ShortName;
  mtime: number;
  dir?: DirPlan;
  file?: FilePlan;
}

const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

/** Turns the tree into directories and files with sizes in clusters; no cluster numbers yet. */
function planTree(tree: FileTree, clusterSize: number, hasLabel: boolean): { dirs: DirPlan[]; files: FilePlan[] } {
  const dirs: DirPlan[] = [];
  const files: FilePlan[] = [];
  const rootEntry = tree.get('')!;
  const visit = (path: string, meta: Meta, parent: DirPlan | undefined): DirPlan => {
    const d: DirPlan = { path, meta, parent, children: [], clusters: 0, firstCluster: 0 };
    dirs.push(d);
    const names = tree.children(path);
    names.forEach((n) => checkLongName(n, join(path, n)));
    const shorts = assignShortNames(names, path);
    // Root has no . and ..; it carries the volume label entry instead.
    let slots = parent ? 2 : hasLabel ? 1 : 0;
    names.forEach((name, i) => {
      const p = join(path, name);
      const e = tree.resolve(p);
      if (!e) throw new InputError(`FAT: hard link ${JSON.stringify(p)} points nowhere`);
      const short = shorts[i]!;
      slots += 1 + (short.needsLfn ? lfnEntryCount(name) : 0);
      if (e.type === 'dir') {
        d.children.push({ name, short, mtime: e.mtime, dir: visit(p, e, d) });
      } else if (e.type === 'file') {
        if (e.content.size > MAX_FILE_SIZE) throw new InputError(`FAT: ${JSON.stringify(p)} is ${e.content.size} bytes; FAT32 files stop at 4 GiB - 1`);
        // A hard link becomes a second copy: FAT has no shared inodes, and cross-linked clusters are corruption.
        const f: FilePlan = { path: p, content: e.content, clusters: Math.ceil(e.content.size / clusterSize), firstCluster: 0 };
        files.push(f);
        d.children.push({ name, short, mtime: e.mtime, file: f });
      } else {
        throw new InputError(`FAT: cannot store ${JSON.stringify(p)}: FAT has no ${e.type === 'symlink' ? 'symbolic link' : `${e.type} node`}s`);
      }
    });
    if (slots > MAX_DIR_ENTRIES) throw new InputError(`FAT: directory ${JSON.stringify(path || '/')} needs ${slots} entries; FAT allows ${MAX_DIR_ENTRIES}`);
    d.clusters = Math.max(1, Math.ceil((slots * DIRENT_SIZE) / clusterSize));
    return d;
  };
  if (rootEntry.type !== 'dir') throw new InputError('FAT: the tree root must be a directory');
  visit('', rootEntry, undefined);
  // Depth-first, siblings in byte order: directories and files each come out in paths() order.
  return { dirs, files };
}

function encodeDir(d: DirPlan, clusterSize: number, label: string | undefined): Uint8Array {
  const out = new Uint8Array(d.clusters * clusterSize);
  let o = 0;
  const put = (b: Uint8Array) => {
    out.set(b, o);
    o += DIRENT_SIZE;
  };
  if (!d.parent) {
    if (label !== undefined) put(encodeShortEntry({ raw: label, attr: ATTR_VOLUME_ID, caseFlags: 0, cluster: 0, size: 0, mtime: d.meta.mtime }));
  } else {
    put(encodeShortEntry({ raw: '.'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: d.firstCluster, size: 0, mtime: d.meta.mtime }));
    // `..` of a directory in the root points to cluster 0, not the root's cluster (fatgen103).
    const up = d.parent.parent ? d.parent.firstCluster : 0;
    put(encodeShortEntry({ raw: '..'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: up, size: 0, mtime: d.parent.meta.mtime }));
  }
  for (const c of d.children) {
    if (c.short.needsLfn) {
      const sum = lfnChecksum(Buffer.from(c.short.raw, 'latin1'));
      for (const l of encodeLfnEntries(c.name, sum)) put(l);
    }
    const cluster = c.dir ? c.dir.firstCluster : c.file!.firstCluster;
    const size = c.file ? c.file.content.size : 0;
    put(encodeShortEntry({ raw: c.short.raw, attr: c.dir ? ATTR_DIRECTORY : ATTR_ARCHIVE, caseFlags: c.short.caseFlags, cluster, size, mtime: c.mtime }));
  }
  return out;
}

function encodeBootSector(g: FatGeometry, opts: Fat32Options, label: string): Uint8Array {
  const b = Buffer.alloc(SECTOR);
  b.set([0xeb, 0x58, 0x90], 0);
  b.write('MSWIN4.1', 3, 'latin1');
  b.writeUInt16LE(SECTOR, 11);
  b[13] = g.sectorsPerCluster;
  b.writeUInt16LE(g.reservedSectors, 14);
  b[16] = NUM_FATS;
  // Root entries and 16-bit totals are zero on FAT32.
  b[21] = 0xf8;
  b.writeUInt16LE(63, 24);
  b.writeUInt16LE(255, 26);
  b.writeUInt32LE(opts.hiddenSectors ?? 0, 28);
  b.writeUInt32LE(g.totalSectors, 32);
  b.writeUInt32LE(g.fatSectors, 36);
  // Flags 0: FATs mirrored. Version 0.0.
  b.writeUInt32LE(ROOT_CLUSTER, 44);
  b.writeUInt16LE(1, 48);
  b.writeUInt16LE(6, 50);
  b[64] = 0x80;
  b[66] = 0x29;
  b.writeUInt32LE(opts.serial >>> 0, 67);
  b.write(label, 71, 'latin1');
  b.write('FAT32   ', 82, 'latin1');
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

function encodeFsInfo(free: number, nextFree: number): Uint8Array {
  const b = Buffer.alloc(SECTOR);
  b.writeUInt32LE(0x41615252, 0);
  b.writeUInt32LE(0x61417272, 484);
  b.writeUInt32LE(free, 488);
  b.writeUInt32LE(nextFree, 492);
  b.writeUInt32LE(0xaa550000, 508);
  return b;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Streams one file's bytes into its contiguous clusters in chunks of at most 1 MiB. */
async function writeFileData(sink: BlockSink, offset: number, f: FilePlan, zeroed: boolean): Promise<void> {
  const size = f.content.size;
  let buf = new Uint8Array(Math.min(CHUNK, size));
  let fill = 0;
  let pos = offset;
  let seen = 0;
  const flush = async () => {
    if (fill === 0) return;
    const data = buf.subarray(0, fill);
    if (!(zeroed && allZero(data))) await sink.write(pos, data);
    pos += fill;
    fill = 0;
    // A fresh buffer: a sink may hold on to what it was given.
    buf = new Uint8Array(Math.min(CHUNK, size - (pos - offset)));
  };
  for await (const chunk of f.content.stream()) {
    seen += chunk.length;
    if (seen > size) break;
    let c = chunk;
    while (c.length > 0) {
      const n = Math.min(buf.length - fill, c.length);
      buf.set(c.subarray(0, n), fill);
      fill += n;
      c = c.subarray(n);
      if (fill === buf.length) await flush();
    }
  }
  if (seen !== size) {
    throw new OssifyError(`FAT: ${f.content.origin} (for ${f.path}) yielded ${seen > size ? 'more than' : seen} bytes, expected ${size}`);
  }
  await flush();
}

/**
 * Writes a FAT32 volume holding `tree` at offset 0 of `sink`. Directories come first, then
 * files, each in tree order and each contiguous, so the layout is a function of the tree.
 */
export async function writeFat32(tree: FileTree, opts: Fat32Options, sink: BlockSink): Promise<Fat32Result> {
  const g = fatGeometry(opts.size, opts.clusterSize);
  const label = encodeLabel(opts.label);
  const hasLabel = opts.label !== '';
  if (!Number.isInteger(opts.serial) || opts.serial < 0 || opts.serial > 0xffff_ffff) throw new InputError(`FAT: serial ${opts.serial} is not a 32-bit number`);
  const hidden = opts.hiddenSectors ?? 0;
  if (!Number.isInteger(hidden) || hidden < 0 || hidden > 0xffff_ffff) throw new InputError(`FAT: hidden sectors ${hidden} is not a 32-bit number`);
  const zeroed = opts.zeroed ?? true;
  const { dirs, files } = planTree(tree, g.clusterSize, hasLabel);

  let next = ROOT_CLUSTER;
  for (const d of dirs) {
    d.firstCluster = next;
    next += d.clusters;
  }
  for (const f of files) {
    if (f.clusters === 0) continue;
    f.firstCluster = next;
    next += f.clusters;
  }
  const used = next - ROOT_CLUSTER;
  if (used > g.clusterCount) {
    throw new InputError(
      `FAT: the tree needs ${used} clusters of ${g.clusterSize} bytes (${used * g.clusterSize} bytes) but a ${opts.size}-byte volume has ${g.clusterCount}`,
      { hint: 'make the partition larger' },
    );
  }

  const reserved = new Uint8Array(g.reservedSectors * SECTOR);
  const boot = encodeBootSector(g, opts, label);
  const nextFree = next <= g.clusterCount + 1 ? next : 0xffff_ffff;
  const info = encodeFsInfo(g.clusterCount - used, nextFree);
  reserved.set(boot, 0);
  reserved.set(info, SECTOR);
  reserved.set(boot, 6 * SECTOR);
  reserved.set(info, 7 * SECTOR);
  await sink.write(0, reserved);

  await writeFats(sink, g, [...dirs, ...files], next, zeroed);

  for (const d of dirs) await sink.write(clusterOffset(g, d.firstCluster), encodeDir(d, g.clusterSize, hasLabel ? label : undefined));
  for (const f of files) if (f.clusters > 0) await writeFileData(sink, clusterOffset(g, f.firstCluster), f, zeroed);

  return { clusters: g.clusterCount, clusterSize: g.clusterSize, usedBytes: used * g.clusterSize };
}

/** Both FAT copies: reserved entries 0–1, then one contiguous chain per allocation. */
async function writeFats(sink: BlockSink, g: FatGeometry, allocs: { firstCluster: number; clusters: number }[], next: number, zeroed: boolean): Promise<void> {
  const fatBytes = g.fatSectors * SECTOR;
  const usedBytes = Math.ceil((next * 4) / SECTOR) * SECTOR;
  const fat = new Uint8Array(usedBytes);
  const dv = new DataView(fat.buffer);
  dv.setUint32(0, 0x0fff_fff8, true);
  // High bits set: the volume was cleanly unmounted and has no I/O errors.
  dv.setUint32(4, EOC, true);
  for (const a of allocs) {
    if (a.clusters === 0) continue;
    const last = a.firstCluster + a.clusters - 1;
    for (let c = a.firstCluster; c < last; c++) dv.setUint32(c * 4, c + 1, true);
    dv.setUint32(last * 4, EOC, true);
  }
  for (let copy = 0; copy < NUM_FATS; copy++) {
    const base = (g.reservedSectors + copy * g.fatSectors) * SECTOR;
    for (let o = 0; o < usedBytes; o += CHUNK) await sink.write(base + o, fat.subarray(o, Math.min(o + CHUNK, usedBytes)));
    if (!zeroed) {
      const zeros = new Uint8Array(CHUNK);
      for (let o = usedBytes; o < fatBytes; o += CHUNK) await sink.write(base + o, zeros.subarray(0, Math.min(CHUNK, fatBytes - o)));
    }
  }
}
