import { OssifyError } from '../../util/errors.ts';
import { ATTR_DIRECTORY, ATTR_LFN, ATTR_VOLUME_ID, DIRENT_SIZE, epochFromFat } from './dirent.ts';
import { caseFoldKey, decodeLfnChars, lfnChecksum, LOWER_BASE, LOWER_EXT } from './names.ts';

/**
 * A strict FAT32 reader: for round-trip tests of the writer and for inspecting an ESP on an
 * existing disk. Anything a lenient driver would paper over (a bad LFN checksum, a broken
 * chain, differing FAT copies) is reported.
 */

/** Reads `length` bytes at `offset` of the volume. */
export type FatByteReader = (offset: number, length: number) => Promise<Uint8Array>;

export class FatFormatError extends OssifyError {
  constructor(message: string) {
    super(`FAT: ${message}`);
    this.name = 'FatFormatError';
  }
}

export interface FatInfo {
  oem: string;
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterSize: number;
  reservedSectors: number;
  numFats: number;
  fatSectors: number;
  totalSectors: number;
  hiddenSectors: number;
  dataStartSector: number;
  clusterCount: number;
  rootCluster: number;
  serial: number;
  /** The label in the boot sector (11 chars, padded). */
  bootLabel: string;
  /** The root directory's volume-label entry, if any (padded). */
  volumeLabel: string | undefined;
  fsInfo: { free: number; nextFree: number } | undefined;
  /** Whether every FAT copy is byte-identical to the first. */
  fatsMatch: boolean;
}

export interface FatNode {
  /** Tree-style path (`a/b/c`), built from long names where present. */
  path: string;
  /** Long name, or the short name with NTRes case flags applied. */
  name: string;
  /** The 8.3 name as `NAME.EXT`. */
  shortName: string;
  hasLongName: boolean;
  isDir: boolean;
  attr: number;
  size: number;
  firstCluster: number;
  /** Modification time as epoch seconds, reading FAT local time as UTC. */
  mtime: number;
  /** Creation time as epoch seconds (10 ms refinement floored to whole seconds). */
  ctime: number;
}

export interface FatVolume {
  info: FatInfo;
  /** Every file and directory below the root, depth-first in directory order. */
  list(): Promise<FatNode[]>;
  readDir(path: string): Promise<FatNode[]>;
  readFile(path: string): Promise<Uint8Array>;
  /** The cluster chain from `first` (validated: in range, no loops, properly terminated). */
  chain(first: number): number[];
  /** Clusters whose FAT entry is 0. */
  freeClusters(): number;
}

function bufferReader(bytes: Uint8Array): FatByteReader {
  return async (offset, length) => {
    if (offset < 0 || offset + length > bytes.length) throw new FatFormatError(`read of ${length} bytes at ${offset} is past the end (${bytes.length})`);
    return bytes.subarray(offset, offset + length);
  };
}

const ascii = (b: Uint8Array) => Buffer.from(b).toString('latin1');

export async function readFat(source: Uint8Array | FatByteReader): Promise<FatVolume> {
  const read = source instanceof Uint8Array ? bufferReader(source) : source;
  const bs = Buffer.from(await read(0, 512));
  if (bs[510] !== 0x55 || bs[511] !== 0xaa) throw new FatFormatError('boot sector lacks the 55 AA signature');
  const bps = bs.readUInt16LE(11);
  const spc = bs[13]!;
  if (![512, 1024, 2048, 4096].includes(bps) || spc === 0 || (spc & (spc - 1)) !== 0) throw new FatFormatError(`implausible BPB (bytes/sector ${bps}, sectors/cluster ${spc})`);
  if (bs.readUInt16LE(17) !== 0 || bs.readUInt16LE(22) !== 0) throw new FatFormatError('not FAT32 (root entry count or 16-bit FAT size set)');
  const reservedSectors = bs.readUInt16LE(14);
  const numFats = bs[16]!;
  const totalSectors = bs.readUInt16LE(19) || bs.readUInt32LE(32);
  const fatSectors = bs.readUInt32LE(36);
  const dataStartSector = reservedSectors + numFats * fatSectors;
  const clusterCount = Math.floor((totalSectors - dataStartSector) / spc);
  const rootCluster = bs.readUInt32LE(44);
  const clusterSize = bps * spc;
  if (numFats < 1 || fatSectors * (bps / 4) < clusterCount + 2) throw new FatFormatError(`FAT of ${fatSectors} sectors cannot map ${clusterCount} clusters`);

  const fatBytes = fatSectors * bps;
  const fat = Buffer.from(await read(reservedSectors * bps, fatBytes));
  let fatsMatch = true;
  for (let i = 1; i < numFats; i++) {
    if (!fat.equals(Buffer.from(await read((reservedSectors + i * fatSectors) * bps, fatBytes)))) fatsMatch = false;
  }
  const entry = (c: number) => fat.readUInt32LE(c * 4) & 0x0fff_ffff;

  let fsInfo: FatInfo['fsInfo'];
  const fsInfoSector = bs.readUInt16LE(48);
  if (fsInfoSector > 0 && fsInfoSector < reservedSectors) {
    const fi = Buffer.from(await read(fsInfoSector * bps, bps));
    if (fi.readUInt32LE(0) === 0x41615252 && fi.readUInt32LE(484) === 0x61417272) fsInfo = { free: fi.readUInt32LE(488), nextFree: fi.readUInt32LE(492) };
  }

  const chain = (first: number): number[] => {
    const out: number[] = [];
    let c = first;
    for (;;) {
      if (c < 2 || c > clusterCount + 1) throw new FatFormatError(`chain from cluster ${first} reaches invalid cluster ${c}`);
      out.push(c);
      if (out.length > clusterCount) throw new FatFormatError(`chain from cluster ${first} loops`);
      const n = entry(c);
      if (n >= 0x0fff_fff8) return out;
      if (n === 0 || n === 0x0fff_fff7) throw new FatFormatError(`chain from cluster ${first} hits ${n === 0 ? 'a free' : 'a bad'} cluster at ${c}`);
      c = n;
    }
  };

  const clusterPos = (c: number) => (dataStartSector + (c - 2) * spc) * bps;

  /** Reads a chain, one read per contiguous run. */
  const readChain = async (first: number, length: number): Promise<Uint8Array> => {
    const out = new Uint8Array(length);
    if (length === 0) return out;
    const cs = chain(first);
    if (cs.length * clusterSize < length) throw new FatFormatError(`chain from cluster ${first} holds ${cs.length * clusterSize} bytes, ${length} expected`);
    let o = 0;
    for (let i = 0; i < cs.length && o < length; ) {
      let j = i + 1;
      while (j < cs.length && cs[j] === cs[j - 1]! + 1) j++;
      const n = Math.min((j - i) * clusterSize, length - o);
      out.set(await read(clusterPos(cs[i]!), n), o);
      o += n;
      i = j;
    }
    return out;
  };

  let volumeLabel: string | undefined;

  const parseDir = async (cluster: number, dirPath: string): Promise<FatNode[]> => {
    const bytes = await readChain(cluster, chain(cluster).length * clusterSize);
    const out: FatNode[] = [];
    let lfn: { parts: string[]; expect: number; sum: number } | undefined;
    for (let o = 0; o + DIRENT_SIZE <= bytes.length; o += DIRENT_SIZE) {
      const e = bytes.subarray(o, o + DIRENT_SIZE);
      const where = `${JSON.stringify(dirPath || '/')} entry ${o / DIRENT_SIZE}`;
      if (e[0] === 0x00) break;
      if (e[0] === 0xe5) {
        lfn = undefined;
        continue;
      }
      const attr = e[11]!;
      if ((attr & 0x3f) === ATTR_LFN) {
        const ord = e[0]! & 0x1f;
        const { chars } = decodeLfnChars(e);
        if (e[0]! & 0x40) {
          if (lfn) throw new FatFormatError(`${where}: long name interrupted`);
          lfn = { parts: [], expect: ord, sum: e[13]! };
        } else if (!lfn || lfn.sum !== e[13] || ord !== lfn.expect) {
          throw new FatFormatError(`${where}: long-name entry out of sequence`);
        }
        if (ord === 0) throw new FatFormatError(`${where}: long-name entry with order 0`);
        lfn.parts[ord - 1] = chars;
        lfn.expect = ord - 1;
        continue;
      }
      const raw = e.slice(0, 11);
      if (raw[0] === 0x05) raw[0] = 0xe5;
      if (attr & ATTR_VOLUME_ID) {
        if (lfn) throw new FatFormatError(`${where}: long name before a volume label`);
        if (!dirPath) volumeLabel = ascii(raw);
        continue;
      }
      const dv = new DataView(e.buffer, e.byteOffset, DIRENT_SIZE);
      const baseRaw = ascii(raw.subarray(0, 8)).trimEnd();
      const extRaw = ascii(raw.subarray(8, 11)).trimEnd();
      const shortName = extRaw ? `${baseRaw}.${extRaw}` : baseRaw;
      let name: string;
      let hasLongName = false;
      if (lfn) {
        if (lfn.expect !== 0) throw new FatFormatError(`${where}: long name incomplete`);
        if (lfn.sum !== lfnChecksum(raw)) throw new FatFormatError(`${where}: long-name checksum does not match ${JSON.stringify(shortName)}`);
        name = lfn.parts.join('');
        hasLongName = true;
        lfn = undefined;
      } else {
        const base = e[12]! & LOWER_BASE ? baseRaw.toLowerCase() : baseRaw;
        const ext = e[12]! & LOWER_EXT ? extRaw.toLowerCase() : extRaw;
        name = ext ? `${base}.${ext}` : base;
      }
      if (name === '.' || name === '..') continue;
      out.push({
        path: dirPath ? `${dirPath}/${name}` : name,
        name,
        shortName,
        hasLongName,
        isDir: (attr & ATTR_DIRECTORY) !== 0,
        attr,
        size: dv.getUint32(28, true),
        firstCluster: (dv.getUint16(20, true) << 16) | dv.getUint16(26, true),
        mtime: epochFromFat(dv.getUint16(24, true), dv.getUint16(22, true)),
        ctime: epochFromFat(dv.getUint16(16, true), dv.getUint16(14, true), e[13]),
      });
    }
    if (lfn) throw new FatFormatError(`${JSON.stringify(dirPath || '/')}: long name without its short entry`);
    return out;
  };

  const lookup = async (path: string): Promise<FatNode | undefined> => {
    let cluster = rootCluster;
    let node: FatNode | undefined;
    let here = '';
    for (const seg of path.split('/').filter(Boolean)) {
      if (node && !node.isDir) return undefined;
      const key = caseFoldKey(seg);
      node = (await parseDir(cluster, here)).find((n) => caseFoldKey(n.name) === key || n.shortName === seg.toUpperCase());
      if (!node) return undefined;
      here = node.path;
      cluster = node.firstCluster;
    }
    return node;
  };

  // Parsing the root also finds the volume label.
  await parseDir(rootCluster, '');

  const info: FatInfo = {
    oem: ascii(bs.subarray(3, 11)),
    bytesPerSector: bps,
    sectorsPerCluster: spc,
    clusterSize,
    reservedSectors,
    numFats,
    fatSectors,
    totalSectors,
    hiddenSectors: bs.readUInt32LE(28),
    dataStartSector,
    clusterCount,
    rootCluster,
    serial: bs.readUInt32LE(67),
    bootLabel: ascii(bs.subarray(71, 82)),
    volumeLabel,
    fsInfo,
    fatsMatch,
  };

  return {
    info,
    chain,
    freeClusters() {
      let n = 0;
      for (let c = 2; c < clusterCount + 2; c++) if (entry(c) === 0) n++;
      return n;
    },
    async readDir(path) {
      if (path.split('/').filter(Boolean).length === 0) return parseDir(rootCluster, '');
      const n = await lookup(path);
      if (!n || !n.isDir) throw new FatFormatError(`no directory ${JSON.stringify(path)}`);
      return parseDir(n.firstCluster, n.path);
    },
    async readFile(path) {
      const n = await lookup(path);
      if (!n || n.isDir) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
      if (n.size === 0) return new Uint8Array(0);
      return readChain(n.firstCluster, n.size);
    },
    async list() {
      const out: FatNode[] = [];
      const walk = async (cluster: number, path: string) => {
        for (const n of await parseDir(cluster, path)) {
          out.push(n);
          if (n.isDir) await walk(n.firstCluster, n.path);
        }
      };
      await walk(rootCluster, '');
      return out;
    },
  };
}
