import { deflate } from 'pako';
import type { BlockSource } from './blocks.ts';

/**
 * A stream-optimized VMDK (VMware Virtual Disk Format 1.1, the format OVF packages carry):
 * a sparse-extent header and the embedded descriptor, then each grain that holds data as a
 * grain marker (its sector, its compressed length) and a zlib stream, then the grain tables,
 * the grain directory and a footer (the header again, now knowing where the directory is),
 * each behind a metadata marker, and an end-of-stream marker. It is written front to back,
 * so it streams; grains of zeros are left out (grain table entry 0 reads as zeros).
 */

export const VMDK_MAGIC = 0x564d444b; // "KDMV" little-endian
const SECTOR = 512;
/** 64 KiB grains, 512 entries a grain table: QEMU's and VMware's defaults. */
export const GRAIN_SIZE = 128;
const GRAIN_BYTES = GRAIN_SIZE * SECTOR;
const GTES_PER_GT = 512;
const DESCRIPTOR_OFFSET = 1;
const DESCRIPTOR_SECTORS = 20;
/** Data starts on a grain boundary, after the header and descriptor. */
const OVERHEAD = GRAIN_SIZE;
const FLAG_NL_DETECT = 1;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;
const GD_AT_END = 0xffffffffffffffffn;
const MARKER = { endOfStream: 0, grainTable: 1, grainDirectory: 2, footer: 3 } as const;

export interface VmdkOptions {
  /** The extent file name the descriptor names (the file's own name). */
  fileName: string;
  /** 32-bit content id, derived from the disk's content by the caller. */
  cid: number;
  /** Adapter the descriptor suggests; `lsilogic` is what VMware and VirtualBox import by default. */
  adapterType?: 'ide' | 'lsilogic' | 'buslogic' | 'legacyESX';
  /** zlib level of the grains (QEMU uses zlib's default, 6). */
  level?: 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
}

function header(capacity: number, gdOffset: bigint): Uint8Array {
  const h = new Uint8Array(SECTOR);
  const v = new DataView(h.buffer);
  v.setUint32(0, VMDK_MAGIC, true);
  v.setUint32(4, 3, true);
  v.setUint32(8, FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS, true);
  v.setBigUint64(12, BigInt(capacity), true);
  v.setBigUint64(20, BigInt(GRAIN_SIZE), true);
  v.setBigUint64(28, BigInt(DESCRIPTOR_OFFSET), true);
  v.setBigUint64(36, BigInt(DESCRIPTOR_SECTORS), true);
  v.setUint32(44, GTES_PER_GT, true);
  v.setBigUint64(48, 0n, true);
  v.setBigUint64(56, gdOffset, true);
  v.setBigUint64(64, BigInt(OVERHEAD), true);
  h[72] = 0;
  // The newline-detection characters: a transfer that rewrote line ends would change them.
  h.set([0x0a, 0x20, 0x0d, 0x0a], 73);
  v.setUint16(77, 1, true); // deflate
  return h;
}

function marker(sectors: number, type: number): Uint8Array {
  const m = new Uint8Array(SECTOR);
  const v = new DataView(m.buffer);
  v.setBigUint64(0, BigInt(sectors), true);
  v.setUint32(12, type, true);
  return m;
}

export function vmdkDescriptor(capacitySectors: number, opts: VmdkOptions): string {
  const adapter = opts.adapterType ?? 'lsilogic';
  // BIOS-style geometry the descriptor carries; IDE uses 16 heads, SCSI 255.
  const heads = adapter === 'ide' ? 16 : 255;
  const cylinders = Math.min(Math.floor(capacitySectors / (heads * 63)), adapter === 'ide' ? 16383 : 65535);
  if (/["\n]/.test(opts.fileName)) throw new Error(`vmdk: file name ${JSON.stringify(opts.fileName)} cannot be written in a descriptor`);
  return [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${(opts.cid >>> 0).toString(16).padStart(8, '0')}`,
    'parentCID=ffffffff',
    'createType="streamOptimized"',
    '',
    '# Extent description',
    `RW ${capacitySectors} SPARSE "${opts.fileName}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.virtualHWVersion = "4"',
    `ddb.geometry.cylinders = "${cylinders}"`,
    `ddb.geometry.heads = "${heads}"`,
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${adapter}"`,
    '',
  ].join('\n');
}

const pad = (n: number) => (SECTOR - (n % SECTOR)) % SECTOR;

/** The file as a stream of chunks. */
export async function* writeVmdk(source: BlockSource, opts: VmdkOptions): AsyncGenerator<Uint8Array> {
  if (source.blockSize !== GRAIN_BYTES) throw new Error(`vmdk: the source must give ${GRAIN_BYTES}-byte blocks, not ${source.blockSize}`);
  const capacity = Math.ceil(source.size / SECTOR);
  const grains = Math.ceil(capacity / GRAIN_SIZE);
  const tables = Math.ceil(grains / GTES_PER_GT);
  const gt = new Uint32Array(tables * GTES_PER_GT);

  yield header(capacity, GD_AT_END);
  const desc = new TextEncoder().encode(vmdkDescriptor(capacity, opts));
  if (desc.length > DESCRIPTOR_SECTORS * SECTOR) throw new Error('vmdk: descriptor too long');
  const front = new Uint8Array((OVERHEAD - DESCRIPTOR_OFFSET) * SECTOR);
  front.set(desc);
  yield front;

  let sector = OVERHEAD;
  for await (const b of source.blocks()) {
    const z = deflate(b.data, { level: opts.level ?? 6, legacyHash: true } as Parameters<typeof deflate>[1]);
    const out = new Uint8Array(12 + z.length + pad(12 + z.length));
    const v = new DataView(out.buffer);
    v.setBigUint64(0, BigInt(b.offset / SECTOR), true);
    v.setUint32(8, z.length, true);
    out.set(z, 12);
    gt[b.offset / GRAIN_BYTES] = sector;
    yield out;
    sector += out.length / SECTOR;
  }

  const gtSectors = (GTES_PER_GT * 4) / SECTOR;
  const gd = new Uint32Array(tables);
  for (let t = 0; t < tables; t++) {
    yield marker(gtSectors, MARKER.grainTable);
    sector += 1;
    gd[t] = sector;
    const table = gt.subarray(t * GTES_PER_GT, (t + 1) * GTES_PER_GT);
    yield leBytes(table);
    sector += gtSectors;
  }
  const gdBytes = leBytes(gd);
  const gdPadded = new Uint8Array(gdBytes.length + pad(gdBytes.length));
  gdPadded.set(gdBytes);
  yield marker(gdPadded.length / SECTOR, MARKER.grainDirectory);
  sector += 1;
  const gdOffset = sector;
  yield gdPadded;
  yield marker(1, MARKER.footer);
  yield header(capacity, BigInt(gdOffset));
  yield marker(0, MARKER.endOfStream);
}

function leBytes(a: Uint32Array): Uint8Array {
  const out = new Uint8Array(a.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) v.setUint32(i * 4, a[i]!, true);
  return out;
}
