import type { BlockSink } from '../util/sink.ts';
import type { BlockSource } from './blocks.ts';

/**
 * A fixed VHD (Microsoft's Virtual Hard Disk Image Format Specification): the disk's bytes as
 * they are, then a 512-byte footer. Azure takes only fixed VHDs whose virtual size is a whole
 * number of MiB, so the size is rounded up to one (the padding reads as zeros). The data is
 * written block by block, so the holes of the disk stay holes in the file.
 */

export const VHD_COOKIE = 'conectix';
const MiB = 1 << 20;
/** Seconds from the Unix epoch to the VHD epoch, 2000-01-01T00:00:00Z. */
const VHD_EPOCH = 946684800;

export interface VhdOptions {
  /** Seconds since 1970 for the footer's time stamp (SOURCE_DATE_EPOCH). */
  epoch: number;
  /** 16 bytes that identify the image; derived from its content by the caller, never random. */
  uniqueId: Uint8Array;
}

/** The virtual size a fixed VHD of this disk has: whole MiB. */
export function vhdVirtualSize(size: number): number {
  return Math.ceil(size / MiB) * MiB;
}

/** Cylinders, heads and sectors per track as the specification's appendix computes them. */
export function vhdGeometry(size: number): { cylinders: number; heads: number; sectors: number } {
  let total = Math.floor(size / 512);
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255;
  let sectors: number;
  let heads: number;
  let cylTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    sectors = 255;
    heads = 16;
    cylTimesHeads = Math.floor(total / sectors);
  } else {
    sectors = 17;
    cylTimesHeads = Math.floor(total / sectors);
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectors = 31;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectors);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectors = 63;
      heads = 16;
      cylTimesHeads = Math.floor(total / sectors);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectors };
}

export function vhdFooter(virtualSize: number, opts: VhdOptions): Uint8Array {
  if (opts.uniqueId.length !== 16) throw new Error('vhd: the unique id must be 16 bytes');
  const f = new Uint8Array(512);
  const v = new DataView(f.buffer);
  f.set(new TextEncoder().encode(VHD_COOKIE), 0);
  v.setUint32(8, 2); // features: "reserved", always set
  v.setUint32(12, 0x00010000);
  v.setBigUint64(16, 0xffffffffffffffffn); // data offset: none, a fixed disk
  v.setUint32(24, Math.min(0xffffffff, Math.max(0, Math.floor(opts.epoch) - VHD_EPOCH)));
  // Creator "qem2" tells QEMU to take the size from the footer, not the CHS geometry (Hyper-V and Azure always do);
  // it is what `qemu-img convert -O vpc -o force_size` writes for Azure.
  f.set(new TextEncoder().encode('qem2'), 28);
  v.setUint32(32, 0x00010000);
  f.set(new TextEncoder().encode('Wi2k'), 36);
  v.setBigUint64(40, BigInt(virtualSize));
  v.setBigUint64(48, BigInt(virtualSize));
  const g = vhdGeometry(virtualSize);
  v.setUint16(56, g.cylinders);
  f[58] = g.heads;
  f[59] = g.sectors;
  v.setUint32(60, 2); // disk type: fixed
  f.set(opts.uniqueId, 68);
  let sum = 0;
  for (const b of f) sum += b;
  v.setUint32(64, ~sum >>> 0);
  return f;
}

/** Writes the image through `sink`; returns the file size. */
export async function writeVhd(source: BlockSource, sink: BlockSink, opts: VhdOptions): Promise<number> {
  const size = vhdVirtualSize(source.size);
  for await (const b of source.blocks()) {
    // The last block of a disk that is not whole blocks long carries zero padding past its end: not written.
    await sink.write(b.offset, b.offset + b.data.length > source.size ? b.data.subarray(0, source.size - b.offset) : b.data);
  }
  await sink.write(size, vhdFooter(size, opts));
  return size + 512;
}
