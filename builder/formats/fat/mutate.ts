import { OssifyError } from '../../util/errors.ts';
import { ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_LFN, ATTR_VOLUME_ID, DIRENT_SIZE, encodeShortEntry, epochFromFat } from './dirent.ts';
import { FatFormatError } from './reader.ts';
import { assignShortNames, caseFoldKey, checkLongName, decodeLfnChars, encodeLfnEntries, lfnChecksum, LOWER_BASE, LOWER_EXT, type ShortName } from './names.ts';

/**
 * In-place changes to an existing FAT32 volume (an ESP on a disk or block device), made so
 * that a process killed at any point leaves a volume every FAT driver still reads the same
 * way as before or after the change, and `fsck.fat -n` finds nothing to fix once an
 * operation has returned.
 *
 * FAT has no journal, so ordering is the whole story. Each operation writes in this order and
 * syncs the device between the stages:
 *
 * - new file: data into free clusters → FAT chain (both copies) and FSInfo → directory entry.
 *   Until the entry exists the clusters are a leak nobody reads; `repair()` reclaims them.
 * - delete: the sector holding the short entry (the file vanishes in one write) → the rest
 *   of its long-name entries → the chain freed in the FAT.
 * - rename within a directory: the new long-name and short entries are written over the old
 *   run of entries when they fit in it (pick a temporary name at least as long as the final
 *   one and they do), and every run this editor creates lies inside one 512-byte sector, so
 *   the rename is one sector write: the file has the old name or the new one, never both or
 *   neither. This is the primitive an A/B switch is built on.
 * - replace content: new chain written and linked (and, asked to, read back and compared) →
 *   the short entry's first cluster and size rewritten (one sector) → old chain freed.
 *
 * Allocation is first-fit from cluster 2 and the lowest free directory slots, never the
 * FSInfo hint, so the same change to the same volume yields the same bytes.
 */

export interface FatDevice {
  /** Reads `length` bytes at `offset` of the volume. */
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every write so far durable (fsync); called at each ordering point. */
  sync(): Promise<void>;
}

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

export interface FatProblem {
  kind: 'lost-clusters' | 'orphan-long-name' | 'cross-link' | 'bad-chain' | 'free-count' | 'fat-copies-differ';
  path: string;
  detail: string;
}

export interface FatEditor {
  readonly clusterSize: number;
  freeBytes(): number;
  /** Bytes of clusters a file of `size` bytes occupies. */
  allocationFor(size: number): number;
  list(dir: string): Promise<FatEntry[]>;
  stat(path: string): Promise<FatEntry | undefined>;
  readFile(path: string): Promise<Uint8Array>;
  /** Creates the directory and any missing parents; existing ones are left alone. */
  mkdirp(path: string, opts: { mtime: number }): Promise<void>;
  /** Creates a new file; refuses to overwrite one. */
  writeFile(path: string, data: Uint8Array, opts: { mtime: number }): Promise<void>;
  /** Removes a file or an empty directory; false when it did not exist. */
  remove(path: string): Promise<boolean>;
  /** Renames within the file's directory; refuses when `newName` exists. */
  rename(path: string, newName: string): Promise<void>;
  /**
   * Swaps a file's content for `data` with a single directory-entry write. With `verify`, the
   * new clusters are read back and compared before that write: a medium that returns other
   * bytes fails the call with the file still holding its old content.
   */
  replaceFile(path: string, data: Uint8Array, opts: { mtime: number; verify?: boolean }): Promise<void>;
  /** What `fsck.fat` would complain about (leaks and debris an interrupted change leaves). */
  check(): Promise<FatProblem[]>;
  /** Fixes what `check` finds that is safe to fix (leaked clusters, orphaned long names, the free count). */
  repair(): Promise<FatProblem[]>;
}

const SECTOR = 512;
const EOC = 0x0fff_ffff;
const BAD = 0x0fff_fff7;
const CLUSTER_MASK = 0x0fff_ffff;
const SLOTS_PER_SECTOR = SECTOR / DIRENT_SIZE;
const DELETED = 0xe5;
const MAX_DIR_SLOTS = 65536;
const WRITE_CHUNK = 4 << 20;

interface Entry extends FatEntry {
  shortRaw: string;
  /** First slot of the run (its first long-name entry, or the short entry). */
  firstSlot: number;
  shortSlot: number;
}

interface Dir {
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

const splitPath = (p: string) => p.split('/').filter(Boolean);
const joinPath = (dir: string, name: string) => (dir ? `${dir}/${name}` : name);
const latin1 = (b: Uint8Array) => Buffer.from(b).toString('latin1');

export async function openFatEditor(dev: FatDevice): Promise<FatEditor> {
  const bs = Buffer.from(await dev.read(0, SECTOR));
  if (bs[510] !== 0x55 || bs[511] !== 0xaa) throw new FatFormatError('boot sector lacks the 55 AA signature');
  const bps = bs.readUInt16LE(11);
  if (bps !== SECTOR) throw new FatFormatError(`${bps}-byte sectors; only 512 is supported for in-place changes`);
  const spc = bs[13]!;
  if (spc === 0 || (spc & (spc - 1)) !== 0) throw new FatFormatError(`implausible sectors per cluster ${spc}`);
  if (bs.readUInt16LE(17) !== 0 || bs.readUInt16LE(22) !== 0) throw new FatFormatError('not FAT32');
  const reserved = bs.readUInt16LE(14);
  const numFats = bs[16]!;
  const totalSectors = bs.readUInt16LE(19) || bs.readUInt32LE(32);
  const fatSectors = bs.readUInt32LE(36);
  const extFlags = bs.readUInt16LE(40);
  // Bit 7: only one FAT is active (the others are stale). Mirroring is all this editor does.
  if (extFlags & 0x80) throw new FatFormatError('FAT mirroring is disabled on this volume; refusing to modify it');
  const rootCluster = bs.readUInt32LE(44);
  const fsInfoSector = bs.readUInt16LE(48);
  const dataStart = reserved + numFats * fatSectors;
  const clusterSize = SECTOR * spc;
  const clusterCount = Math.floor((totalSectors - dataStart) / spc);
  if (numFats < 1 || fatSectors * (SECTOR / 4) < clusterCount + 2) throw new FatFormatError(`FAT of ${fatSectors} sectors cannot map ${clusterCount} clusters`);
  const fat = Buffer.from(await dev.read(reserved * SECTOR, fatSectors * SECTOR));
  const maxCluster = clusterCount + 1;
  const dirtyFat = new Set<number>();
  // A change killed between writing the first FAT and the second leaves them different;
  // the first is the one every driver (and fsck.fat) trusts, so it is the one kept.
  const staleCopies = new Set<number>();
  for (let copy = 1; copy < numFats; copy++) {
    const other = Buffer.from(await dev.read((reserved + copy * fatSectors) * SECTOR, fatSectors * SECTOR));
    for (let sec = 0; sec < fatSectors; sec++) {
      if (!fat.subarray(sec * SECTOR, (sec + 1) * SECTOR).equals(other.subarray(sec * SECTOR, (sec + 1) * SECTOR))) staleCopies.add(sec);
    }
  }

  const get = (c: number) => fat.readUInt32LE(c * 4) & CLUSTER_MASK;
  const set = (c: number, v: number) => {
    // The top four bits are reserved: keep whatever is there.
    fat.writeUInt32LE(((fat.readUInt32LE(c * 4) & ~CLUSTER_MASK) | v) >>> 0, c * 4);
    dirtyFat.add(Math.floor((c * 4) / SECTOR));
  };
  let free = 0;
  for (let c = 2; c <= maxCluster; c++) if (get(c) === 0) free++;

  const clusterPos = (c: number) => (dataStart + (c - 2) * spc) * SECTOR;

  const chain = (first: number, what: string): number[] => {
    const out: number[] = [];
    let c = first;
    for (;;) {
      if (c < 2 || c > maxCluster) throw new FatFormatError(`${what}: chain from cluster ${first} reaches invalid cluster ${c}`);
      out.push(c);
      if (out.length > clusterCount) throw new FatFormatError(`${what}: chain from cluster ${first} loops`);
      const n = get(c);
      if (n >= 0x0fff_fff8) return out;
      if (n === 0 || n === BAD) throw new FatFormatError(`${what}: chain from cluster ${first} hits ${n === 0 ? 'a free' : 'a bad'} cluster at ${c}`);
      c = n;
    }
  };

  const readClusters = async (cs: number[], length: number): Promise<Buffer> => {
    const out = Buffer.alloc(length);
    let o = 0;
    for (let i = 0; i < cs.length && o < length; ) {
      let j = i + 1;
      while (j < cs.length && cs[j] === cs[j - 1]! + 1) j++;
      const n = Math.min((j - i) * clusterSize, length - o);
      out.set(await dev.read(clusterPos(cs[i]!), n), o);
      o += n;
      i = j;
    }
    return out;
  };

  /** Writes `data` over the clusters, one write per contiguous run, zero-padding the last cluster. */
  const writeClusters = async (cs: number[], data: Uint8Array): Promise<void> => {
    let o = 0;
    for (let i = 0; i < cs.length; ) {
      let j = i + 1;
      while (j < cs.length && cs[j] === cs[j - 1]! + 1) j++;
      const runBytes = (j - i) * clusterSize;
      const base = clusterPos(cs[i]!);
      for (let k = 0; k < runBytes; k += WRITE_CHUNK) {
        const n = Math.min(WRITE_CHUNK, runBytes - k);
        let piece = data.subarray(Math.min(o + k, data.length), Math.min(o + k + n, data.length));
        if (piece.length < n) {
          const padded = new Uint8Array(n);
          padded.set(piece);
          piece = padded;
        }
        await dev.write(base + k, piece);
      }
      o += runBytes;
      i = j;
    }
  };

  const flushFat = async (): Promise<void> => {
    if (dirtyFat.size === 0) return;
    const sectors = [...dirtyFat].sort((a, b) => a - b);
    for (let copy = 0; copy < numFats; copy++) {
      const base = (reserved + copy * fatSectors) * SECTOR;
      for (const s of sectors) await dev.write(base + s * SECTOR, fat.subarray(s * SECTOR, (s + 1) * SECTOR));
    }
    dirtyFat.clear();
    if (fsInfoSector > 0 && fsInfoSector < reserved) {
      const fi = Buffer.from(await dev.read(fsInfoSector * SECTOR, SECTOR));
      if (fi.readUInt32LE(0) === 0x41615252 && fi.readUInt32LE(484) === 0x61417272) {
        fi.writeUInt32LE(free, 488);
        fi.writeUInt32LE(firstFree(2) ?? 0xffff_ffff, 492);
        await dev.write(fsInfoSector * SECTOR, fi);
      }
    }
  };

  const firstFree = (from: number): number | undefined => {
    for (let c = from; c <= maxCluster; c++) if (get(c) === 0) return c;
    return undefined;
  };

  /** First-fit: the lowest contiguous run that fits, else the lowest free clusters. */
  const pickClusters = (n: number, what: string): number[] => {
    if (n === 0) return [];
    if (n > free) {
      throw new OssifyError(`FAT: no room for ${what}: it needs ${n * clusterSize} bytes, ${free * clusterSize} are free`, {
        hint: 'use a larger ESP (disk.esp in the profile)',
      });
    }
    let runStart = 0;
    let runLen = 0;
    for (let c = 2; c <= maxCluster; c++) {
      if (get(c) !== 0) {
        runLen = 0;
        continue;
      }
      if (runLen === 0) runStart = c;
      if (++runLen === n) return Array.from({ length: n }, (_, i) => runStart + i);
    }
    const out: number[] = [];
    for (let c = 2; c <= maxCluster && out.length < n; c++) if (get(c) === 0) out.push(c);
    return out;
  };

  const link = (cs: number[]) => {
    cs.forEach((c, i) => set(c, i + 1 < cs.length ? cs[i + 1]! : EOC));
    free -= cs.length;
  };
  const release = (cs: number[]) => {
    for (const c of cs) set(c, 0);
    free += cs.length;
  };

  // ── directories ──────────────────────────────────────────────────────────────────────

  const parseDir = async (path: string, first: number, isRoot: boolean): Promise<Dir> => {
    const cs = chain(first, JSON.stringify(path || '/'));
    const bytes = await readClusters(cs, cs.length * clusterSize);
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
  };

  const openDir = async (path: string): Promise<Dir> => {
    let dir = await parseDir('', rootCluster, true);
    for (const seg of splitPath(path)) {
      const e = findIn(dir, seg);
      if (!e || !e.isDir) throw new FatFormatError(`no directory ${JSON.stringify(joinPath(dir.path, seg))}`);
      dir = await parseDir(e.path, e.firstCluster, false);
    }
    return dir;
  };

  const findIn = (dir: Dir, name: string): Entry | undefined => {
    const key = caseFoldKey(name);
    return dir.entries.find((e) => caseFoldKey(e.name) === key || e.shortName === name.toUpperCase());
  };

  const parentOf = (path: string): { dir: string; name: string } => {
    const segs = splitPath(path);
    const name = segs.pop();
    if (!name) throw new FatFormatError('the root directory cannot be changed this way');
    return { dir: segs.join('/'), name };
  };

  const slotOffset = (dir: Dir, slot: number) => clusterPos(dir.chain[Math.floor((slot * DIRENT_SIZE) / clusterSize)]!) + ((slot * DIRENT_SIZE) % clusterSize);

  /**
   * Writes the directory sectors that hold `slots` from the in-memory copy; the sector of
   * `keySlot` (the short entry) goes first when a name is removed, last when one is added.
   */
  const writeDirSlots = async (dir: Dir, slots: number[], keySlot: number, keyOrder: 'first' | 'last'): Promise<void> => {
    const sectors = [...new Set(slots.map((s) => Math.floor(s / SLOTS_PER_SECTOR)))].sort((a, b) => a - b);
    const key = Math.floor(keySlot / SLOTS_PER_SECTOR);
    const ordered = [...sectors.filter((s) => s === key && keyOrder === 'first'), ...sectors.filter((s) => s !== key), ...sectors.filter((s) => s === key && keyOrder === 'last')];
    for (const s of ordered) {
      const slot = s * SLOTS_PER_SECTOR;
      await dev.write(slotOffset(dir, slot), dir.bytes.subarray(slot * DIRENT_SIZE, (slot + SLOTS_PER_SECTOR) * DIRENT_SIZE));
    }
  };

  const slotFree = (dir: Dir, i: number) => i >= dir.end || dir.bytes[i * DIRENT_SIZE] === DELETED;

  /**
   * The lowest run of `n` free slots inside one sector (so writing it is atomic), extending
   * the directory by a cluster when none is left. Slots between the end marker and the run
   * are marked deleted first so readers that stop at the end marker still reach the run.
   */
  const claimRun = async (dir: Dir, n: number, what: string): Promise<number> => {
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
          await writeDirSlots(dir, gap, gap[0]!, 'first');
          await dev.sync();
          dir.end = s;
        }
        // What follows the run must read as the end of the directory (or be an entry).
        const after = s + n;
        if (after >= dir.end && after < dir.slots && dir.bytes[after * DIRENT_SIZE] !== 0) {
          dir.bytes.fill(0, after * DIRENT_SIZE, (after + 1) * DIRENT_SIZE);
          await writeDirSlots(dir, [after], after, 'first');
          await dev.sync();
        }
        return s;
      }
      if (dir.slots + clusterSize / DIRENT_SIZE > MAX_DIR_SLOTS) throw new OssifyError(`FAT: directory ${JSON.stringify(dir.path || '/')} is full (${what})`);
      await growDir(dir, what);
    }
  };

  const growDir = async (dir: Dir, what: string): Promise<void> => {
    const [c] = pickClusters(1, `directory ${JSON.stringify(dir.path || '/')} (${what})`);
    await dev.write(clusterPos(c!), new Uint8Array(clusterSize));
    await dev.sync();
    set(dir.chain[dir.chain.length - 1]!, c!);
    set(c!, EOC);
    free -= 1;
    await flushFat();
    await dev.sync();
    dir.chain.push(c!);
    dir.bytes = Buffer.concat([dir.bytes, Buffer.alloc(clusterSize)]);
    dir.slots = dir.bytes.length / DIRENT_SIZE;
  };

  const shortNameFor = (dir: Dir, name: string, except?: Entry): ShortName => {
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
  };

  /** The entries of one name: its long-name entries (if any), then the short entry. */
  const encodeRun = (name: string, short: ShortName, shortEntry: Uint8Array): Uint8Array[] => {
    const e = Uint8Array.from(shortEntry);
    for (let i = 0; i < 11; i++) e[i] = short.raw.charCodeAt(i);
    e[12] = short.caseFlags;
    if (!short.needsLfn) return [e];
    return [...encodeLfnEntries(name, lfnChecksum(e.subarray(0, 11))), e];
  };

  const placeRun = (dir: Dir, start: number, run: Uint8Array[]) => {
    run.forEach((e, k) => dir.bytes.set(e, (start + k) * DIRENT_SIZE));
    dir.end = Math.max(dir.end, start + run.length);
  };

  const addEntry = async (dir: Dir, name: string, entry: Omit<Parameters<typeof encodeShortEntry>[0], 'raw' | 'caseFlags'>): Promise<void> => {
    if (findIn(dir, name)) throw new OssifyError(`FAT: ${JSON.stringify(joinPath(dir.path, name))} already exists`);
    const short = shortNameFor(dir, name);
    const run = encodeRun(name, short, encodeShortEntry({ ...entry, raw: short.raw, caseFlags: short.caseFlags }));
    const start = await claimRun(dir, run.length, joinPath(dir.path, name));
    placeRun(dir, start, run);
    const slots = run.map((_, k) => start + k);
    await writeDirSlots(dir, slots, start + run.length - 1, 'last');
    await dev.sync();
  };

  const markDeleted = (dir: Dir, from: number, to: number): number[] => {
    const out: number[] = [];
    for (let k = from; k <= to; k++) {
      dir.bytes[k * DIRENT_SIZE] = DELETED;
      out.push(k);
    }
    return out;
  };

  const lookupEntry = async (path: string): Promise<{ dir: Dir; entry: Entry | undefined }> => {
    const { dir, name } = parentOf(path);
    const d = await openDir(dir);
    return { dir: d, entry: findIn(d, name) };
  };

  const writeNewChain = async (data: Uint8Array, what: string): Promise<number[]> => {
    const cs = pickClusters(Math.ceil(data.length / clusterSize), what);
    await writeClusters(cs, data);
    await dev.sync();
    link(cs);
    await flushFat();
    await dev.sync();
    return cs;
  };

  const publicEntry = (e: Entry): FatEntry => ({
    path: e.path,
    name: e.name,
    shortName: e.shortName,
    isDir: e.isDir,
    attr: e.attr,
    size: e.size,
    firstCluster: e.firstCluster,
    mtime: e.mtime,
  });

  const scan = async (fix: boolean): Promise<FatProblem[]> => {
    const problems: FatProblem[] = [];
    const owner = new Map<number, string>();
    const claim = (cs: number[], path: string) => {
      const shared = new Set<string>();
      for (const c of cs) {
        const other = owner.get(c);
        if (other !== undefined) shared.add(other);
        else owner.set(c, path);
      }
      for (const other of shared) problems.push({ kind: 'cross-link', path, detail: `shares clusters with ${JSON.stringify(other)}` });
    };
    if (staleCopies.size > 0) {
      problems.push({ kind: 'fat-copies-differ', path: '/', detail: `${staleCopies.size} sector(s) of the second FAT differ from the first` });
      if (fix) {
        for (const sec of staleCopies) dirtyFat.add(sec);
        await flushFat();
        await dev.sync();
        staleCopies.clear();
      }
    }
    const walk = async (dir: Dir): Promise<void> => {
      claim(dir.chain, dir.path || '/');
      if (dir.orphans.length > 0) {
        problems.push({ kind: 'orphan-long-name', path: dir.path || '/', detail: `${dir.orphans.length} long-name run(s) without their short entry` });
        if (fix) {
          const slots = dir.orphans.flatMap((o) => markDeleted(dir, o.first, o.last));
          await writeDirSlots(dir, slots, slots[0]!, 'first');
          await dev.sync();
        }
      }
      for (const e of dir.entries) {
        if (e.firstCluster === 0) continue;
        let cs: number[];
        try {
          cs = chain(e.firstCluster, e.path);
        } catch (err) {
          problems.push({ kind: 'bad-chain', path: e.path, detail: (err as Error).message });
          continue;
        }
        if (e.isDir) await walk(await parseDir(e.path, e.firstCluster, false));
        else {
          if (Math.ceil(e.size / clusterSize) !== cs.length) problems.push({ kind: 'bad-chain', path: e.path, detail: `size ${e.size} but ${cs.length} clusters` });
          claim(cs, e.path);
        }
      }
    };
    await walk(await parseDir('', rootCluster, true));
    const lost: number[] = [];
    for (let c = 2; c <= maxCluster; c++) {
      const v = get(c);
      if (v !== 0 && v !== BAD && !owner.has(c)) lost.push(c);
    }
    if (lost.length > 0) {
      problems.push({ kind: 'lost-clusters', path: '/', detail: `${lost.length} allocated cluster(s) belong to no file` });
      if (fix) {
        release(lost);
        await flushFat();
        await dev.sync();
      }
    }
    if (fsInfoSector > 0 && fsInfoSector < reserved) {
      const fi = Buffer.from(await dev.read(fsInfoSector * SECTOR, SECTOR));
      if (fi.readUInt32LE(0) === 0x41615252 && fi.readUInt32LE(488) !== free && fi.readUInt32LE(488) !== 0xffff_ffff) {
        problems.push({ kind: 'free-count', path: '/', detail: `FSInfo says ${fi.readUInt32LE(488)} free clusters, there are ${free}` });
        if (fix) {
          dirtyFat.add(0);
          await flushFat();
          await dev.sync();
        }
      }
    }
    return problems;
  };

  return {
    clusterSize,
    freeBytes: () => free * clusterSize,
    allocationFor: (size) => Math.ceil(size / clusterSize) * clusterSize,

    async list(path) {
      return (await openDir(path)).entries.map(publicEntry);
    },

    async stat(path) {
      if (splitPath(path).length === 0) return undefined;
      try {
        const { entry } = await lookupEntry(path);
        return entry && publicEntry(entry);
      } catch (err) {
        if (err instanceof FatFormatError && /^FAT: no directory/.test(err.message)) return undefined;
        throw err;
      }
    },

    async readFile(path) {
      const { entry } = await lookupEntry(path);
      if (!entry || entry.isDir) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
      if (entry.size === 0) return new Uint8Array(0);
      return readClusters(chain(entry.firstCluster, entry.path), entry.size);
    },

    async mkdirp(path, opts) {
      let dir = await parseDir('', rootCluster, true);
      for (const seg of splitPath(path)) {
        let e = findIn(dir, seg);
        if (!e) {
          const [c] = pickClusters(1, `directory ${JSON.stringify(joinPath(dir.path, seg))}`);
          const body = new Uint8Array(clusterSize);
          body.set(encodeShortEntry({ raw: '.'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: c!, size: 0, mtime: opts.mtime }), 0);
          // `..` of a directory in the root names cluster 0 (fatgen103).
          body.set(encodeShortEntry({ raw: '..'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: dir.isRoot ? 0 : dir.firstCluster, size: 0, mtime: opts.mtime }), DIRENT_SIZE);
          await dev.write(clusterPos(c!), body);
          await dev.sync();
          link([c!]);
          await flushFat();
          await dev.sync();
          await addEntry(dir, seg, { attr: ATTR_DIRECTORY, cluster: c!, size: 0, mtime: opts.mtime });
          dir = await parseDir(dir.path, dir.firstCluster, dir.isRoot);
          e = findIn(dir, seg)!;
        }
        if (!e.isDir) throw new OssifyError(`FAT: ${JSON.stringify(e.path)} is a file, not a directory`);
        dir = await parseDir(e.path, e.firstCluster, false);
      }
    },

    async writeFile(path, data, opts) {
      const { dir, name } = parentOf(path);
      const d = await openDir(dir);
      if (findIn(d, name)) throw new OssifyError(`FAT: ${JSON.stringify(path)} already exists`);
      if (data.length > 0xffff_ffff) throw new OssifyError(`FAT: ${JSON.stringify(path)} is ${data.length} bytes; FAT32 files stop at 4 GiB - 1`);
      shortNameFor(d, name); // refuse a bad name before any cluster is written
      const cs = await writeNewChain(data, JSON.stringify(path));
      await addEntry(d, name, { attr: ATTR_ARCHIVE, cluster: cs[0] ?? 0, size: data.length, mtime: opts.mtime });
    },

    async remove(path) {
      const { dir, entry } = await lookupEntry(path);
      if (!entry) return false;
      let cs: number[] = [];
      // A rename interrupted half-way (by this editor or an OS driver) leaves two names for
      // one chain: dropping one name must not free the clusters the other still uses.
      const shared = dir.entries.some((e) => e !== entry && e.firstCluster !== 0 && e.firstCluster === entry.firstCluster);
      if (entry.firstCluster !== 0 && !shared) cs = chain(entry.firstCluster, entry.path);
      if (entry.isDir) {
        const inner = await parseDir(entry.path, entry.firstCluster, false);
        if (inner.entries.length > 0) throw new OssifyError(`FAT: directory ${JSON.stringify(path)} is not empty`);
      }
      const slots = markDeleted(dir, entry.firstSlot, entry.shortSlot);
      await writeDirSlots(dir, slots, entry.shortSlot, 'first');
      await dev.sync();
      if (cs.length > 0) {
        release(cs);
        await flushFat();
        await dev.sync();
      }
      return true;
    },

    async rename(path, newName) {
      const { dir, entry } = await lookupEntry(path);
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
        await writeDirSlots(dir, slots, entry.firstSlot, 'first');
        await dev.sync();
        return;
      }
      // Does not fit: the new run first, then the old one deleted. A crash in between leaves
      // two names for one chain, which `check` reports as a cross-link.
      const start = await claimRun(dir, run.length, joinPath(dir.path, newName));
      placeRun(dir, start, run);
      await writeDirSlots(dir, run.map((_, k) => start + k), start + run.length - 1, 'last');
      await dev.sync();
      const gone = markDeleted(dir, entry.firstSlot, entry.shortSlot);
      await writeDirSlots(dir, gone, entry.shortSlot, 'first');
      await dev.sync();
    },

    async replaceFile(path, data, opts) {
      const { dir, entry } = await lookupEntry(path);
      if (!entry || entry.isDir) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
      const oldChain = entry.firstCluster === 0 ? [] : chain(entry.firstCluster, entry.path);
      const cs = await writeNewChain(data, JSON.stringify(path));
      if (opts.verify && data.length > 0 && !Buffer.from(await readClusters(cs, data.length)).equals(Buffer.from(data.buffer, data.byteOffset, data.byteLength))) {
        release(cs);
        await flushFat();
        await dev.sync();
        throw new OssifyError(`FAT: ${JSON.stringify(path)} reads back differently than it was written: the medium is failing`);
      }
      const e = encodeShortEntry({ raw: entry.shortRaw, attr: entry.attr, caseFlags: dir.bytes[entry.shortSlot * DIRENT_SIZE + 12]!, cluster: cs[0] ?? 0, size: data.length, mtime: opts.mtime });
      dir.bytes.set(e, entry.shortSlot * DIRENT_SIZE);
      await writeDirSlots(dir, [entry.shortSlot], entry.shortSlot, 'first');
      await dev.sync();
      if (oldChain.length > 0) {
        release(oldChain);
        await flushFat();
        await dev.sync();
      }
    },

    check: () => scan(false),
    repair: () => scan(true),
  };
}
