import { crc32 } from 'node:zlib';
import type { BlockSink } from '../util/sink.ts';
import { bytesToGuid, guidToBytes } from '../util/guid.ts';
import { InputError, OssifyError } from '../util/errors.ts';

/**
 * GUID Partition Table (UEFI 2.10 §5.3): protective MBR at LBA 0, primary header at LBA 1
 * with its 128×128-byte entry array at LBA 2–33, and a mirror (entries, then header) in the
 * last 33 sectors. Sector size is fixed at 512: every target here (virtio, qcow2, USB
 * sticks, cloud disks) presents 512-byte logical sectors.
 */

export const SECTOR = 512;

/** GPT partition type GUIDs (Discoverable Partitions Specification); root types are per architecture (builder/arch.ts). */
export const PARTITION_TYPES = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  linuxData: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;
const ENTRY_COUNT = 128;
const ENTRY_SIZE = 128;
const ENTRIES_BYTES = ENTRY_COUNT * ENTRY_SIZE;
const ENTRIES_SECTORS = ENTRIES_BYTES / SECTOR;
const HEADER_SIZE = 92;
const SIGNATURE = 'EFI PART';
const REVISION = 0x0001_0000;
const NAME_UNITS = 36;
/** Primary: MBR + header + entries; backup: entries + header. */
const FIRST_USABLE = 2 + ENTRIES_SECTORS;
const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

export interface GptPartition {
  /** Partition label, at most 36 UTF-16 code units (`PARTNAME=` in uevent, `PARTLABEL` in udev). */
  name: string;
  typeGuid: string;
  guid: string;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  /** Bit 0 required, bit 1 no-block-io, bit 2 legacy-BIOS-bootable, bits 48–63 type-specific. */
  attributes?: bigint;
}

export interface GptLayout {
  /** Bytes; a multiple of 512. */
  diskSize: number;
  diskGuid: string;
  /** In table order: partition number n is `partitions[n - 1]`. */
  partitions: GptPartition[];
}

/** First and last LBA partitions may use on a disk of `diskSize` bytes. */
export function usableRange(diskSize: number): { firstLba: number; lastLba: number; sectors: number } {
  const sectors = diskSize / SECTOR;
  return { firstLba: FIRST_USABLE, lastLba: sectors - 1 - ENTRIES_SECTORS - 1, sectors };
}

const label = (p: GptPartition, i: number) => `partition ${i + 1} (${JSON.stringify(p.name)})`;

function checkGuid(g: string, what: string): void {
  if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(g)) {
    throw new InputError(`GPT: ${what} ${JSON.stringify(g)} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  }
}

function checkDiskSize(diskSize: number): void {
  if (!Number.isSafeInteger(diskSize) || diskSize <= 0 || diskSize % SECTOR !== 0) {
    throw new InputError(`GPT: disk size ${diskSize} is not a positive multiple of ${SECTOR} bytes`);
  }
  // Room for the two tables and at least one sector between them.
  if (diskSize / SECTOR < 2 * FIRST_USABLE) throw new InputError(`GPT: a ${diskSize}-byte disk is too small for a partition table`);
}

/** Refuses anything a firmware or sgdisk would reject, naming the offending partition. */
export function validateLayout(layout: GptLayout): void {
  checkGuid(layout.diskGuid, 'disk GUID');
  validatePartitions(layout.diskSize, layout.partitions, layout.diskGuid);
}

function validatePartitions(diskSize: number, ps: GptPartition[], diskGuid?: string): void {
  checkDiskSize(diskSize);
  const { firstLba, lastLba } = usableRange(diskSize);
  if (ps.length > ENTRY_COUNT) throw new InputError(`GPT: ${ps.length} partitions, at most ${ENTRY_COUNT} fit the table`);
  const guids = new Map<string, string>(diskGuid ? [[diskGuid.toUpperCase(), 'the disk']] : []);
  ps.forEach((p, i) => {
    const who = label(p, i);
    if (p.name.length > NAME_UNITS) throw new InputError(`GPT: ${who} name is ${p.name.length} UTF-16 units, at most ${NAME_UNITS}`);
    if (p.name.includes('\0')) throw new InputError(`GPT: ${who} name contains NUL`);
    checkGuid(p.typeGuid, `${who} type GUID`);
    checkGuid(p.guid, `${who} GUID`);
    if (p.typeGuid === ZERO_GUID) throw new InputError(`GPT: ${who} has the all-zero type GUID, which marks an unused entry`);
    const dup = guids.get(p.guid.toUpperCase());
    if (dup) throw new InputError(`GPT: ${who} GUID ${p.guid} is also used by ${dup}`);
    guids.set(p.guid.toUpperCase(), who);
    if (!Number.isSafeInteger(p.firstLba) || !Number.isSafeInteger(p.lastLba) || p.firstLba > p.lastLba) {
      throw new InputError(`GPT: ${who} range ${p.firstLba}..${p.lastLba} is empty or not integral`);
    }
    if (p.firstLba < firstLba || p.lastLba > lastLba) {
      throw new InputError(`GPT: ${who} range ${p.firstLba}..${p.lastLba} lies outside the usable sectors ${firstLba}..${lastLba}`);
    }
    const attrs = p.attributes ?? 0n;
    if (attrs < 0n || attrs >= 1n << 64n) throw new InputError(`GPT: ${who} attributes do not fit 64 bits`);
  });
  const sorted = ps.map((p, i) => ({ p, i })).sort((a, b) => a.p.firstLba - b.p.firstLba);
  for (let k = 1; k < sorted.length; k++) {
    const a = sorted[k - 1]!;
    const b = sorted[k]!;
    if (b.p.firstLba <= a.p.lastLba) throw new InputError(`GPT: ${label(b.p, b.i)} overlaps ${label(a.p, a.i)}`);
  }
}

function encodeEntries(ps: GptPartition[]): Uint8Array {
  const buf = Buffer.alloc(ENTRIES_BYTES);
  ps.forEach((p, i) => {
    const o = i * ENTRY_SIZE;
    buf.set(guidToBytes(p.typeGuid), o);
    buf.set(guidToBytes(p.guid), o + 16);
    buf.writeBigUInt64LE(BigInt(p.firstLba), o + 32);
    buf.writeBigUInt64LE(BigInt(p.lastLba), o + 40);
    buf.writeBigUInt64LE(p.attributes ?? 0n, o + 48);
    buf.write(p.name, o + 56, NAME_UNITS * 2, 'utf16le');
  });
  return buf;
}

function encodeHeader(layout: GptLayout, myLba: number, altLba: number, entriesLba: number, entriesCrc: number): Uint8Array {
  const { firstLba, lastLba } = usableRange(layout.diskSize);
  const h = Buffer.alloc(SECTOR);
  h.write(SIGNATURE, 0, 'latin1');
  h.writeUInt32LE(REVISION, 8);
  h.writeUInt32LE(HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(myLba), 24);
  h.writeBigUInt64LE(BigInt(altLba), 32);
  h.writeBigUInt64LE(BigInt(firstLba), 40);
  h.writeBigUInt64LE(BigInt(lastLba), 48);
  h.set(guidToBytes(layout.diskGuid), 56);
  h.writeBigUInt64LE(BigInt(entriesLba), 72);
  h.writeUInt32LE(ENTRY_COUNT, 80);
  h.writeUInt32LE(ENTRY_SIZE, 84);
  h.writeUInt32LE(entriesCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, HEADER_SIZE)), 16);
  return h;
}

/**
 * One 0xEE partition covering the disk (capped at 2^32-1 sectors), so MBR-only tools see
 * the disk as in use. CHS fields are the "not representable" values the UEFI spec allows.
 */
function encodeProtectiveMbr(sectors: number): Uint8Array {
  const m = Buffer.alloc(SECTOR);
  const o = 446;
  m.set([0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff], o);
  m.writeUInt32LE(1, o + 8);
  m.writeUInt32LE(Math.min(sectors - 1, 0xffff_ffff), o + 12);
  m[510] = 0x55;
  m[511] = 0xaa;
  return m;
}

/** The five regions a GPT disk needs, as (offset, bytes) pairs. */
export function gptRegions(layout: GptLayout): { offset: number; data: Uint8Array }[] {
  validateLayout(layout);
  const { sectors } = usableRange(layout.diskSize);
  const entries = encodeEntries(layout.partitions);
  const ecrc = crc32(entries);
  const last = sectors - 1;
  const backupEntries = last - ENTRIES_SECTORS;
  return [
    { offset: 0, data: encodeProtectiveMbr(sectors) },
    { offset: SECTOR, data: encodeHeader(layout, 1, last, 2, ecrc) },
    { offset: 2 * SECTOR, data: entries },
    { offset: backupEntries * SECTOR, data: entries },
    { offset: last * SECTOR, data: encodeHeader(layout, last, 1, backupEntries, ecrc) },
  ];
}

/** Writes the protective MBR and both GPT copies. Touches only the first and last 33 sectors. */
export async function writeGpt(layout: GptLayout, sink: BlockSink): Promise<void> {
  for (const r of gptRegions(layout)) await sink.write(r.offset, r.data);
}

export interface PartitionSpec {
  name: string;
  typeGuid: string;
  guid: string;
  /** Bytes (rounded up to whole sectors), or the rest of the disk up to the last aligned sector (last partition only). */
  size: number | 'rest';
  attributes?: bigint;
}

/**
 * Places partitions in order, each starting on an `align` boundary (1 MiB: what every
 * partitioning tool does, good for 4K-sector and SSD/erase-block alignment). A `'rest'`
 * partition ends at the last aligned boundary before the backup table.
 */
export function planPartitions(diskSize: number, specs: PartitionSpec[], align = 1 << 20): GptPartition[] {
  checkDiskSize(diskSize);
  if (!Number.isSafeInteger(align) || align <= 0 || align % SECTOR !== 0) {
    throw new InputError(`GPT: alignment ${align} is not a positive multiple of ${SECTOR} bytes`);
  }
  const alignS = align / SECTOR;
  const { firstLba, lastLba } = usableRange(diskSize);
  const out: GptPartition[] = [];
  let next = firstLba;
  specs.forEach((s, i) => {
    const who = `partition ${i + 1} (${JSON.stringify(s.name)})`;
    const start = Math.ceil(next / alignS) * alignS;
    let end: number;
    if (s.size === 'rest') {
      if (i !== specs.length - 1) throw new InputError(`GPT: ${who} has size 'rest' but is not the last partition`);
      // Ending on an alignment boundary too keeps the size whole MiBs (sgdisk cautions otherwise).
      end = Math.floor((lastLba + 1) / alignS) * alignS - 1;
      if (start > end) {
        throw new InputError(`GPT: ${who} does not fit: it would start at byte ${start * SECTOR}, past the last usable byte ${(lastLba + 1) * SECTOR - 1} of the ${diskSize}-byte disk`);
      }
    } else {
      if (!Number.isSafeInteger(s.size) || s.size <= 0) throw new InputError(`GPT: ${who} size ${s.size} is not a positive number of bytes`);
      end = start + Math.ceil(s.size / SECTOR) - 1;
      if (end > lastLba) {
        const avail = Math.max(0, (lastLba + 1 - start) * SECTOR);
        throw new InputError(
          `GPT: ${who} does not fit: it needs ${s.size} bytes from byte ${start * SECTOR}, but only ${avail} bytes remain before the backup table of the ${diskSize}-byte disk`,
        );
      }
    }
    const p: GptPartition = { name: s.name, typeGuid: s.typeGuid, guid: s.guid, firstLba: start, lastLba: end };
    if (s.attributes !== undefined) p.attributes = s.attributes;
    out.push(p);
    next = end + 1;
  });
  validatePartitions(diskSize, out);
  return out;
}

export class GptFormatError extends OssifyError {
  constructor(message: string) {
    super(`GPT: ${message}`);
    this.name = 'GptFormatError';
  }
}

/** Reads `length` bytes at `offset`: lets the reader work on a disk too large to load. */
export type ByteReader = (offset: number, length: number) => Promise<Uint8Array>;

export interface GptReadResult extends GptLayout {
  partitions: (GptPartition & { number: number; attributes: bigint })[];
  firstUsableLba: number;
  lastUsableLba: number;
  /** Which copy the layout came from; `backupValid` false means the disk needs repair. */
  source: 'primary' | 'backup';
  primaryValid: boolean;
  backupValid: boolean;
}

export function bufferReader(bytes: Uint8Array): ByteReader {
  return async (offset, length) => {
    if (offset < 0 || offset + length > bytes.length) throw new GptFormatError(`read of ${length} bytes at ${offset} is past the end (${bytes.length})`);
    return bytes.subarray(offset, offset + length);
  };
}

interface ParsedHeader {
  myLba: number;
  altLba: number;
  firstUsable: number;
  lastUsable: number;
  diskGuid: string;
  entriesLba: number;
  count: number;
  entrySize: number;
  entriesCrc: number;
}

function parseHeader(sector: Uint8Array, expectLba: number): ParsedHeader | string {
  const h = Buffer.from(sector.buffer, sector.byteOffset, sector.length);
  if (h.toString('latin1', 0, 8) !== SIGNATURE) return 'no "EFI PART" signature';
  const size = h.readUInt32LE(12);
  if (size < HEADER_SIZE || size > SECTOR) return `header size ${size} out of range`;
  const copy = Buffer.from(h.subarray(0, size));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== h.readUInt32LE(16)) return 'header CRC32 mismatch';
  const num = (o: number) => {
    const v = h.readBigUInt64LE(o);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.NaN : Number(v);
  };
  const p: ParsedHeader = {
    myLba: num(24),
    altLba: num(32),
    firstUsable: num(40),
    lastUsable: num(48),
    diskGuid: bytesToGuid(h.subarray(56, 72)),
    entriesLba: num(72),
    count: h.readUInt32LE(80),
    entrySize: h.readUInt32LE(84),
    entriesCrc: h.readUInt32LE(88),
  };
  if (p.myLba !== expectLba) return `header says it is at LBA ${p.myLba}, found at ${expectLba}`;
  if (p.entrySize < 128 || p.entrySize % 8 !== 0 || p.count === 0 || p.count * p.entrySize > 1 << 20) {
    return `entry array of ${p.count}×${p.entrySize} bytes is implausible`;
  }
  return p;
}

async function readCopy(read: ByteReader, lba: number): Promise<{ header: ParsedHeader; entries: Uint8Array } | string> {
  const header = parseHeader(await read(lba * SECTOR, SECTOR), lba);
  if (typeof header === 'string') return header;
  const entries = await read(header.entriesLba * SECTOR, header.count * header.entrySize);
  if (crc32(entries) !== header.entriesCrc) return 'entry array CRC32 mismatch';
  return { header, entries };
}

function decodeEntries(h: ParsedHeader, entries: Uint8Array): GptReadResult['partitions'] {
  const b = Buffer.from(entries.buffer, entries.byteOffset, entries.length);
  const out: GptReadResult['partitions'] = [];
  for (let i = 0; i < h.count; i++) {
    const o = i * h.entrySize;
    const typeGuid = bytesToGuid(b.subarray(o, o + 16));
    if (typeGuid === ZERO_GUID) continue;
    const raw = b.toString('utf16le', o + 56, o + 56 + NAME_UNITS * 2);
    const nul = raw.indexOf('\0');
    out.push({
      number: i + 1,
      name: nul < 0 ? raw : raw.slice(0, nul),
      typeGuid,
      guid: bytesToGuid(b.subarray(o + 16, o + 32)),
      firstLba: Number(b.readBigUInt64LE(o + 32)),
      lastLba: Number(b.readBigUInt64LE(o + 40)),
      attributes: b.readBigUInt64LE(o + 48),
    });
  }
  return out;
}

/**
 * Reads and CRC-checks the table. The primary copy wins; the backup is used when the primary
 * is damaged (`diskSize` is then needed to find it, unless the source is a buffer).
 */
export async function readGpt(source: Uint8Array | ByteReader, opts: { diskSize?: number } = {}): Promise<GptReadResult> {
  const read = source instanceof Uint8Array ? bufferReader(source) : source;
  const diskSize = opts.diskSize ?? (source instanceof Uint8Array ? source.length : undefined);
  const primary = await readCopy(read, 1);
  let backupLba: number | undefined;
  if (typeof primary !== 'string') backupLba = primary.header.altLba;
  else if (diskSize !== undefined) backupLba = diskSize / SECTOR - 1;
  let backup: Awaited<ReturnType<typeof readCopy>> = 'not located (primary damaged and disk size unknown)';
  if (backupLba !== undefined && Number.isSafeInteger(backupLba) && backupLba > 1) {
    backup = await readCopy(read, backupLba).catch((e: unknown) => `unreadable: ${(e as Error).message}`);
  }
  const chosen = typeof primary !== 'string' ? primary : typeof backup !== 'string' ? backup : undefined;
  if (!chosen) throw new GptFormatError(`no valid partition table: primary ${primary}; backup ${backup as string}`);
  const h = chosen.header;
  return {
    diskSize: diskSize ?? (Math.max(h.myLba, h.altLba) + 1) * SECTOR,
    diskGuid: h.diskGuid,
    firstUsableLba: h.firstUsable,
    lastUsableLba: h.lastUsable,
    partitions: decodeEntries(h, chosen.entries),
    source: chosen === primary ? 'primary' : 'backup',
    primaryValid: typeof primary !== 'string',
    backupValid: typeof backup !== 'string',
  };
}
