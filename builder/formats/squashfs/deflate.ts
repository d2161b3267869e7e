import { inflateSync } from 'node:zlib';
import { deflate } from 'pako';
import type { BlockCodec } from './zstd.ts';

/**
 * squashfs "gzip" (a zlib stream, window 15, memLevel 8, default strategy) from pako with
 * `legacyHash`, which makes it match canonical zlib's output byte for byte, on every machine
 * and thread. Node's bundled zlib is Chromium's fork, whose match hashing has changed between
 * versions. Inflating is exact in any zlib, so decompression uses Node's.
 */
export async function createDeflate(level: number, maxSrc: number): Promise<BlockCodec> {
  return {
    compress(data) {
      if (data.length > maxSrc) throw new Error(`zlib: input of ${data.length} bytes exceeds ${maxSrc}`);
      const out = deflate(data, { level, windowBits: 15, memLevel: 8, legacyHash: true });
      return out.length < data.length ? out : null;
    },
    decompress(data, maxSize) {
      return inflateSync(data, { maxOutputLength: Math.max(maxSize, 1) });
    },
  };
}
