import { InputError } from '../util/errors.ts';
import { zstdCodec } from '../util/zstd.ts';

/**
 * zstd inputs without a host `zstd`. The codec (util/zstd.ts) decompresses one frame into a
 * buffer it sizes up front, and `tar | zstd` pipelines do not record content sizes. So
 * frames are walked here: each frame is decompressed on its own with an output bound
 * computed from its block headers, and the frames' outputs are yielded one by one instead
 * of being glued together.
 */

const FRAME_MAGIC = 0xfd2fb528;
const MAX_BLOCK = 128 * 1024;

export function isZstd(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
}

interface Frame {
  start: number;
  end: number;
  /** Exact content size when the header records it, else an upper bound from the blocks. */
  bound: number;
}

/** Splits a zstd stream into frames without decompressing; skippable frames are dropped. */
export function zstdFrames(data: Uint8Array, origin: string): Frame[] {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const bad = (why: string, at: number) => new InputError(`${origin}: corrupt zstd data at offset ${at}: ${why}`);
  const frames: Frame[] = [];
  let off = 0;
  while (off < data.length) {
    if (off + 4 > data.length) throw bad('truncated frame magic', off);
    const magic = dv.getUint32(off, true);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      if (off + 8 > data.length) throw bad('truncated skippable frame', off);
      off += 8 + dv.getUint32(off + 4, true);
      continue;
    }
    if (magic !== FRAME_MAGIC) throw bad(`bad frame magic 0x${magic.toString(16)}`, off);
    const start = off;
    let p = off + 4;
    if (p >= data.length) throw bad('truncated frame header', p);
    const fhd = data[p++]!;
    const fcsFlag = fhd >> 6;
    const singleSegment = (fhd >> 5) & 1;
    const checksum = (fhd >> 2) & 1;
    const dictBytes = [0, 1, 2, 4][fhd & 3]!;
    let window = 0;
    if (!singleSegment) {
      const wd = data[p++]!;
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 7);
    }
    p += dictBytes;
    const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
    let fcs: number | undefined;
    if (fcsBytes > 0) {
      if (p + fcsBytes > data.length) throw bad('truncated frame header', p);
      if (fcsBytes === 1) fcs = data[p]!;
      else if (fcsBytes === 2) fcs = dv.getUint16(p, true) + 256;
      else if (fcsBytes === 4) fcs = dv.getUint32(p, true);
      else fcs = Number(dv.getBigUint64(p, true));
      p += fcsBytes;
    }
    if (singleSegment) window = fcs!;
    const blockMax = Math.min(window, MAX_BLOCK);
    let bound = 0;
    for (;;) {
      if (p + 3 > data.length) throw bad('truncated block header', p);
      const bh = data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16);
      p += 3;
      const last = bh & 1;
      const type = (bh >> 1) & 3;
      const size = bh >>> 3;
      if (type === 0) {
        p += size;
        bound += size;
      } else if (type === 1) {
        p += 1;
        bound += size;
      } else if (type === 2) {
        p += size;
        bound += blockMax;
      } else {
        throw bad('reserved block type', p - 3);
      }
      if (p > data.length) throw bad('truncated block', p);
      if (last) break;
    }
    if (checksum) p += 4;
    if (p > data.length) throw bad('truncated checksum', p);
    frames.push({ start, end: p, bound: fcs ?? bound });
    off = p;
  }
  return frames;
}

/** Decompresses frame by frame; each yielded chunk is one frame's output (a fresh copy). */
export async function* zstdDecompress(data: Uint8Array, origin: string): AsyncGenerator<Uint8Array> {
  const z = await zstdCodec();
  for (const f of zstdFrames(data, origin)) {
    let out: Uint8Array;
    try {
      out = z.decompress(data.subarray(f.start, f.end), f.bound);
    } catch (err) {
      throw new InputError(`${origin}: zstd decompression failed at offset ${f.start}`, { cause: err });
    }
    if (out.length) yield out;
  }
}

export async function zstdDecompressBytes(data: Uint8Array, origin: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of zstdDecompress(data, origin)) parts.push(p);
  if (parts.length === 1) return parts[0]!;
  return Buffer.concat(parts);
}

/** One frame with the content size recorded: deterministic for a given input and level. */
export async function zstdCompress(data: Uint8Array, level: number): Promise<Uint8Array> {
  return (await zstdCodec()).compress(data, level);
}
