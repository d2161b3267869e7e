import type { Content } from '../tree/content.ts';
import type { BlockSink } from '../util/sink.ts';
import { gptRegions, PARTITION_TYPES, SECTOR, type GptPartition } from './gpt.ts';
import { InputError, OssifyError } from '../util/errors.ts';

/**
 * ISO 9660 (ECMA-119) with an El Torito boot catalog whose one entry is a UEFI (platform
 * 0xEF) no-emulation image: a FAT file system holding the EFI boot loader. The 32 KiB system
 * area carries a protective MBR and a GPT whose one partition, an EFI System Partition, is
 * the boot image's own extent, so the same bytes boot as a CD (El Torito) and written to a
 * USB stick (GPT, 512-byte sectors). Names are ISO 9660 level 2 identifiers (d-characters,
 * uppercase, up to 30 with the dot); no Rock Ridge or Joliet.
 */

export const BLOCK = 2048;
/** Volume descriptors start after the 16-block system area. */
const SYSTEM_BLOCKS = 16;
/** The backup GPT (entries + header, 33 sectors) at the end of the image, in whole blocks. */
const BACKUP_GPT_BLOCKS = Math.ceil((33 * SECTOR) / BLOCK);
const MAX_NAME = 30;
const EFI_PLATFORM = 0xef;
/** El Torito counts the boot image in 512-byte "virtual sectors", in 16 bits. */
const MAX_BOOT_SECTORS = 0xffff;

export interface IsoFile {
  /** Slash-separated path; every component a d-character identifier (`EFI/BOOT.IMG`). */
  path: string;
  content: Content;
}

export interface IsoSpec {
  /** Up to 32 d-characters. */
  volumeId: string;
  files: IsoFile[];
  /** Path of the El Torito EFI boot image (a FAT image) among `files`. */
  efiBootImage: string;
  /** Recording dates of every record and the volume (SOURCE_DATE_EPOCH). */
  epoch: number;
  /** GUIDs of the hybrid GPT, derived by the caller from content. */
  diskGuid: string;
  espGuid: string;
  /** Application identifier in the volume descriptor. */
  application?: string;
}

export interface IsoLayout {
  /** Image size in bytes (a multiple of 2048). */
  size: number;
  /** Where each file's data starts, in 2048-byte blocks, by path. */
  extents: Map<string, { block: number; size: number }>;
  bootCatalogBlock: number;
}

interface Dir {
  name: string;
  path: string;
  parent: Dir | undefined;
  dirs: Dir[];
  files: { name: string; path: string; content: Content }[];
  number: number;
  block: number;
  size: number;
}

const D_CHARS = /^[A-Z0-9_]+$/;

function checkName(name: string, file: boolean, path: string): void {
  const dot = name.indexOf('.');
  const ok = file
    ? dot > 0 && dot === name.lastIndexOf('.') && D_CHARS.test(name.slice(0, dot)) && (dot === name.length - 1 || D_CHARS.test(name.slice(dot + 1)))
    : D_CHARS.test(name);
  const max = file ? MAX_NAME : MAX_NAME + 1;
  if (!ok || name.length > max) {
    throw new InputError(`ISO 9660: ${JSON.stringify(path)}: ${JSON.stringify(name)} is not an ISO 9660 ${file ? 'file name (NAME.EXT, A-Z 0-9 _)' : 'directory name (A-Z 0-9 _)'} of at most ${max} characters`);
  }
}

/** ECMA-119 9.3: names, then extensions, compared as if padded with spaces. */
function compareIds(a: string, b: string): number {
  const [an, ae = ''] = a.split('.');
  const [bn, be = ''] = b.split('.');
  const cmp = (x: string, y: string) => {
    const n = Math.max(x.length, y.length);
    const px = x.padEnd(n, ' ');
    const py = y.padEnd(n, ' ');
    return px < py ? -1 : px > py ? 1 : 0;
  };
  return cmp(an!, bn!) || cmp(ae, be);
}

function buildTree(files: IsoFile[]): Dir {
  const root: Dir = { name: '', path: '', parent: undefined, dirs: [], files: [], number: 1, block: 0, size: 0 };
  const seen = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    if (parts.some((p) => p === '')) throw new InputError(`ISO 9660: ${JSON.stringify(f.path)} has an empty path component`);
    if (parts.length > 8) throw new InputError(`ISO 9660: ${JSON.stringify(f.path)} is nested deeper than 8 levels`);
    let dir = root;
    for (const part of parts.slice(0, -1)) {
      checkName(part, false, f.path);
      let next = dir.dirs.find((d) => d.name === part);
      if (!next) {
        if (dir.files.some((x) => x.name === part)) throw new InputError(`ISO 9660: ${JSON.stringify(f.path)}: ${part} is a file`);
        next = { name: part, path: dir.path ? `${dir.path}/${part}` : part, parent: dir, dirs: [], files: [], number: 0, block: 0, size: 0 };
        dir.dirs.push(next);
      }
      dir = next;
    }
    const name = parts[parts.length - 1]!;
    checkName(name, true, f.path);
    if (seen.has(f.path) || dir.dirs.some((d) => d.name === name)) throw new InputError(`ISO 9660: ${JSON.stringify(f.path)} is listed twice`);
    seen.add(f.path);
    dir.files.push({ name, path: f.path, content: f.content });
  }
  const sortDir = (d: Dir) => {
    d.dirs.sort((a, b) => compareIds(a.name, b.name));
    d.files.sort((a, b) => compareIds(a.name, b.name));
    d.dirs.forEach(sortDir);
  };
  sortDir(root);
  return root;
}

/** Path-table order (ECMA-119 9.4.3): by level, then by parent number, then by name. */
function pathTableOrder(root: Dir): Dir[] {
  const out: Dir[] = [root];
  for (let i = 0; i < out.length; i++) out.push(...out[i]!.dirs);
  out.forEach((d, i) => (d.number = i + 1));
  return out;
}

const both16 = (b: Buffer, o: number, v: number) => {
  b.writeUInt16LE(v, o);
  b.writeUInt16BE(v, o + 2);
};
const both32 = (b: Buffer, o: number, v: number) => {
  b.writeUInt32LE(v, o);
  b.writeUInt32BE(v, o + 4);
};

/** The 7-byte recording date of a directory record, in UTC. */
function recordDate(epoch: number): Buffer {
  const d = new Date(epoch * 1000);
  return Buffer.from([d.getUTCFullYear() - 1900, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), 0]);
}

/** The 17-byte volume date: 16 ASCII digits and a zero GMT offset; all zeros means "not specified". */
function volumeDate(epoch: number | undefined): Buffer {
  if (epoch === undefined) return Buffer.concat([Buffer.from('0'.repeat(16), 'latin1'), Buffer.from([0])]);
  const s = new Date(epoch * 1000).toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return Buffer.concat([Buffer.from(`${s}00`, 'latin1'), Buffer.from([0])]);
}

function dirRecord(id: Buffer, block: number, size: number, isDir: boolean, epoch: number): Buffer {
  const len = 33 + id.length + (id.length % 2 === 0 ? 1 : 0);
  const r = Buffer.alloc(len);
  r[0] = len;
  both32(r, 2, block);
  both32(r, 10, size);
  recordDate(epoch).copy(r, 18);
  r[25] = isDir ? 0x02 : 0;
  both16(r, 28, 1);
  r[32] = id.length;
  id.copy(r, 33);
  return r;
}

/** Directory records packed so none crosses a block boundary; the extent is whole blocks. */
function packRecords(records: Buffer[]): Buffer {
  const out: Buffer[] = [];
  let used = 0;
  for (const r of records) {
    const room = BLOCK - (used % BLOCK);
    if (r.length > room) {
      out.push(Buffer.alloc(room));
      used += room;
    }
    out.push(r);
    used += r.length;
  }
  const pad = (BLOCK - (used % BLOCK)) % BLOCK;
  out.push(Buffer.alloc(pad));
  return Buffer.concat(out);
}

function dirRecords(d: Dir, extents: Map<string, { block: number; size: number }>, epoch: number): Buffer[] {
  const parent = d.parent ?? d;
  const recs = [dirRecord(Buffer.from([0]), d.block, d.size, true, epoch), dirRecord(Buffer.from([1]), parent.block, parent.size, true, epoch)];
  // Directories and files in one sorted sequence, as the standard orders the records.
  const children = [...d.dirs.map((x) => ({ name: x.name, dir: x })), ...d.files.map((f) => ({ name: f.name, file: f }))].sort((a, b) => compareIds(a.name, b.name));
  for (const c of children) {
    if ('dir' in c && c.dir) recs.push(dirRecord(Buffer.from(c.dir.name, 'latin1'), c.dir.block, c.dir.size, true, epoch));
    else if ('file' in c && c.file) {
      const e = extents.get(c.file.path)!;
      recs.push(dirRecord(Buffer.from(`${c.file.name};1`, 'latin1'), e.block, e.size, false, epoch));
    }
  }
  return recs;
}

function pathTable(dirs: Dir[], bigEndian: boolean): Buffer {
  const parts = dirs.map((d) => {
    const id = d.parent ? Buffer.from(d.name, 'latin1') : Buffer.from([0]);
    const r = Buffer.alloc(8 + id.length + (id.length % 2));
    r[0] = id.length;
    if (bigEndian) {
      r.writeUInt32BE(d.block, 2);
      r.writeUInt16BE((d.parent ?? d).number, 6);
    } else {
      r.writeUInt32LE(d.block, 2);
      r.writeUInt16LE((d.parent ?? d).number, 6);
    }
    id.copy(r, 8);
    return r;
  });
  return Buffer.concat(parts);
}

function padString(s: string, n: number): Buffer {
  return Buffer.from(s.padEnd(n, ' ').slice(0, n), 'latin1');
}

function primaryDescriptor(spec: IsoSpec, root: Dir, totalBlocks: number, ptSize: number, lBlock: number, mBlock: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b[0] = 1;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  padString('', 32).copy(b, 8);
  padString(spec.volumeId, 32).copy(b, 40);
  both32(b, 80, totalBlocks);
  both16(b, 120, 1);
  both16(b, 124, 1);
  both16(b, 128, BLOCK);
  both32(b, 132, ptSize);
  b.writeUInt32LE(lBlock, 140);
  b.writeUInt32BE(mBlock, 148);
  dirRecord(Buffer.from([0]), root.block, root.size, true, spec.epoch).copy(b, 156);
  for (const [o, n] of [[190, 128], [318, 128], [446, 128]] as const) padString('', n).copy(b, o);
  padString(spec.application ?? '', 128).copy(b, 574);
  for (const o of [702, 739, 776]) padString('', 37).copy(b, o);
  volumeDate(spec.epoch).copy(b, 813);
  volumeDate(spec.epoch).copy(b, 830);
  volumeDate(undefined).copy(b, 847);
  volumeDate(undefined).copy(b, 864);
  b[881] = 1;
  return b;
}

function bootRecordDescriptor(catalogBlock: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b[0] = 0;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  b.write('EL TORITO SPECIFICATION', 7, 'latin1');
  b.writeUInt32LE(catalogBlock, 71);
  return b;
}

function terminator(): Buffer {
  const b = Buffer.alloc(BLOCK);
  b[0] = 255;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  return b;
}

/** Validation entry (platform EFI, so the default entry is the EFI image) and the default entry. */
function bootCatalog(imageBlock: number, imageSize: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b[0] = 1;
  b[1] = EFI_PLATFORM;
  b[30] = 0x55;
  b[31] = 0xaa;
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum += b.readUInt16LE(i);
  b.writeUInt16LE((0x10000 - (sum & 0xffff)) & 0xffff, 28);
  b[32] = 0x88;
  b[33] = 0; // no emulation
  // A larger image gets 0, as xorriso writes it: firmware (OVMF) then takes the image to run to
  // the end of the volume, and the FAT's own boot sector gives its size.
  const sectors = Math.ceil(imageSize / SECTOR);
  b.writeUInt16LE(sectors > MAX_BOOT_SECTORS ? 0 : sectors, 32 + 6);
  b.writeUInt32LE(imageBlock, 32 + 8);
  return b;
}

/**
 * Plans the image: system area, descriptors (primary, El Torito boot record, terminator),
 * the two path tables, directory extents in path-table order, the boot catalog, the files in
 * path order, then the backup GPT.
 */
export function planIso(spec: IsoSpec): { root: Dir; dirs: Dir[]; layout: IsoLayout; ptSize: number; lBlock: number; mBlock: number } {
  if (!/^[A-Z0-9_]{1,32}$/.test(spec.volumeId)) throw new InputError(`ISO 9660: volume id ${JSON.stringify(spec.volumeId)} is not 1-32 characters of A-Z 0-9 _`);
  const root = buildTree(spec.files);
  const dirs = pathTableOrder(root);
  if (dirs.length > 0xffff) throw new InputError('ISO 9660: more than 65535 directories');
  if (!spec.files.some((f) => f.path === spec.efiBootImage)) throw new InputError(`ISO 9660: the EFI boot image ${spec.efiBootImage} is not among the files`);
  const ptSize = pathTable(dirs, false).length;
  const ptBlocks = Math.ceil(ptSize / BLOCK);
  let next = SYSTEM_BLOCKS + 3;
  const lBlock = next;
  next += ptBlocks;
  const mBlock = next;
  next += ptBlocks;
  // Directory sizes depend only on names, so they are known before any block is assigned.
  const extents = new Map<string, { block: number; size: number }>();
  for (const d of dirs) for (const f of d.files) extents.set(f.path, { block: 0, size: f.content.size });
  for (const d of dirs) d.size = packRecords(dirRecords(d, extents, spec.epoch)).length;
  for (const d of dirs) {
    d.block = next;
    next += d.size / BLOCK;
  }
  const bootCatalogBlock = next++;
  const allFiles = dirs.flatMap((d) => d.files).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const f of allFiles) {
    if (f.content.size > 0xffff_ffff) throw new InputError(`ISO 9660: ${f.path} is ${f.content.size} bytes; one extent holds at most 4 GiB - 1`);
    // An empty file has extent 0, as mkisofs writes it.
    const blocks = Math.ceil(f.content.size / BLOCK);
    extents.set(f.path, { block: blocks ? next : 0, size: f.content.size });
    next += blocks;
  }
  next += BACKUP_GPT_BLOCKS;
  return { root, dirs, layout: { size: next * BLOCK, extents, bootCatalogBlock }, ptSize, lBlock, mBlock };
}

/** The hybrid GPT: one EFI System Partition over the boot image's extent. */
export function hybridPartitions(spec: IsoSpec, layout: IsoLayout): GptPartition[] {
  const e = layout.extents.get(spec.efiBootImage)!;
  const first = (e.block * BLOCK) / SECTOR;
  return [{ name: 'EFI boot', typeGuid: PARTITION_TYPES.esp, guid: spec.espGuid, firstLba: first, lastLba: first + Math.ceil(e.size / SECTOR) - 1 }];
}

/** Writes the whole image through `sink` (positioned writes, file contents streamed). */
export async function writeIso(spec: IsoSpec, sink: BlockSink): Promise<IsoLayout> {
  const { root, dirs, layout, ptSize, lBlock, mBlock } = planIso(spec);
  const totalBlocks = layout.size / BLOCK;
  for (const r of gptRegions({ diskSize: layout.size, diskGuid: spec.diskGuid, partitions: hybridPartitions(spec, layout) })) await sink.write(r.offset, r.data);
  await sink.write(SYSTEM_BLOCKS * BLOCK, primaryDescriptor(spec, root, totalBlocks, ptSize, lBlock, mBlock));
  await sink.write((SYSTEM_BLOCKS + 1) * BLOCK, bootRecordDescriptor(layout.bootCatalogBlock));
  await sink.write((SYSTEM_BLOCKS + 2) * BLOCK, terminator());
  await sink.write(lBlock * BLOCK, pathTable(dirs, false));
  await sink.write(mBlock * BLOCK, pathTable(dirs, true));
  for (const d of dirs) await sink.write(d.block * BLOCK, packRecords(dirRecords(d, layout.extents, spec.epoch)));
  const boot = layout.extents.get(spec.efiBootImage)!;
  await sink.write(layout.bootCatalogBlock * BLOCK, bootCatalog(boot.block, boot.size));
  for (const d of dirs) {
    for (const f of d.files) {
      const e = layout.extents.get(f.path)!;
      let pos = e.block * BLOCK;
      let seen = 0;
      for await (const chunk of f.content.stream()) {
        seen += chunk.length;
        if (seen > e.size) break;
        await sink.write(pos, chunk);
        pos += chunk.length;
      }
      if (seen !== e.size) throw new OssifyError(`ISO 9660: ${f.content.origin} gave ${seen} bytes, ${e.size} were planned`);
    }
  }
  return layout;
}

// ---- reader (for round-trip tests and `ossify run`'s format check) ----

export type IsoByteReader = (offset: number, length: number) => Promise<Uint8Array>;

export interface IsoEntry {
  path: string;
  isDir: boolean;
  block: number;
  size: number;
}

export interface IsoVolume {
  volumeId: string;
  blocks: number;
  entries: IsoEntry[];
  /** The El Torito boot entries: platform, media type, load block, 512-byte sector count. */
  boot: { platform: number; media: number; block: number; sectors: number }[];
}

export class IsoFormatError extends OssifyError {
  constructor(message: string) {
    super(`ISO 9660: ${message}`);
  }
}

/** True when the bytes at 32 KiB are an ISO 9660 volume descriptor. */
export async function isIso9660(read: IsoByteReader): Promise<boolean> {
  const b = Buffer.from(await read(SYSTEM_BLOCKS * BLOCK, 8));
  return b.subarray(1, 6).toString('latin1') === 'CD001';
}

export async function readIso(read: IsoByteReader): Promise<IsoVolume> {
  let pvd: Buffer | undefined;
  let catalog: number | undefined;
  for (let i = SYSTEM_BLOCKS; i < SYSTEM_BLOCKS + 64; i++) {
    const b = Buffer.from(await read(i * BLOCK, BLOCK));
    if (b.subarray(1, 6).toString('latin1') !== 'CD001') throw new IsoFormatError(`block ${i} is not a volume descriptor`);
    if (b[0] === 1) pvd = b;
    else if (b[0] === 0 && b.subarray(7, 30).toString('latin1') === 'EL TORITO SPECIFICATION') catalog = b.readUInt32LE(71);
    else if (b[0] === 255) break;
  }
  if (!pvd) throw new IsoFormatError('no primary volume descriptor');
  const entries: IsoEntry[] = [];
  const walk = async (block: number, size: number, prefix: string, depth: number) => {
    if (depth > 8) throw new IsoFormatError(`${prefix} is nested too deep`);
    const data = Buffer.from(await read(block * BLOCK, size));
    for (let o = 0; o < data.length; ) {
      const len = data[o]!;
      if (len === 0) {
        o = (Math.floor(o / BLOCK) + 1) * BLOCK;
        continue;
      }
      const idLen = data[o + 32]!;
      const id = data.subarray(o + 33, o + 33 + idLen);
      const isDir = (data[o + 25]! & 2) !== 0;
      const b = data.readUInt32LE(o + 2);
      const s = data.readUInt32LE(o + 10);
      if (!(idLen === 1 && (id[0] === 0 || id[0] === 1))) {
        const name = id.toString('latin1').replace(/;1$/, '');
        const path = prefix ? `${prefix}/${name}` : name;
        entries.push({ path, isDir, block: b, size: s });
        if (isDir) await walk(b, s, path, depth + 1);
      }
      o += len;
    }
  };
  await walk(pvd.readUInt32LE(156 + 2), pvd.readUInt32LE(156 + 10), '', 0);
  const boot: IsoVolume['boot'] = [];
  if (catalog !== undefined) {
    const c = Buffer.from(await read(catalog * BLOCK, BLOCK));
    if (c[0] !== 1 || c[30] !== 0x55 || c[31] !== 0xaa) throw new IsoFormatError('the boot catalog has no validation entry');
    let sum = 0;
    for (let i = 0; i < 32; i += 2) sum += c.readUInt16LE(i);
    if ((sum & 0xffff) !== 0) throw new IsoFormatError('the boot catalog validation entry checksum is wrong');
    if (c[32] === 0x88) boot.push({ platform: c[1]!, media: c[33]!, sectors: c.readUInt16LE(38), block: c.readUInt32LE(40) });
  }
  return { volumeId: pvd.subarray(40, 72).toString('latin1').trimEnd(), blocks: pvd.readUInt32LE(80), entries, boot };
}
