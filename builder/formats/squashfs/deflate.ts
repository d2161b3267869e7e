import { deflateSync, inflateSync } from 'node:zlib';
import { deflate } from 'pako';
import { reusableDeflate } from '../../util/zlib-handle.ts';
import type { GzipEngine } from './compress.ts';
import type { BlockCodec } from './zstd.ts';

const SETTINGS = { windowBits: 15, memLevel: 8 } as const;

/**
 * squashfs "gzip": a zlib stream, window 15, memLevel 8, default strategy. `portable` is pako
 * with `legacyHash`, canonical zlib's output byte for byte on every machine and thread (and
 * mksquashfs'). `node` is Node's zlib (see GzipEngine). Inflating is exact in any zlib, so
 * decompression always uses Node's.
 */
export async function createDeflate(level: number, maxSrc: number, engine: GzipEngine = 'portable'): Promise<BlockCodec> {
  const check = (data: Uint8Array) => {
    if (data.length > maxSrc) throw new Error(`zlib: input of ${data.length} bytes exceeds ${maxSrc}`);
  };
  const decompress = (data: Uint8Array, maxSize: number) => inflateSync(data, { maxOutputLength: Math.max(maxSize, 1) });
  if (engine === 'node') {
    const shot = reusableDeflate(level);
    return {
      engine: `node:zlib ${process.versions.zlib}`,
      compress(data) {
        check(data);
        if (shot) {
          // Output only counts if smaller than the input, so the input's size is room enough.
          const out = shot(data, new Uint8Array(data.length));
          return out && out.length < data.length ? out : null;
        }
        const out = deflateSync(data, { level, ...SETTINGS });
        return out.length < data.length ? out : null;
      },
      decompress,
    };
  }
  return {
    engine: 'pako (canonical zlib)',
    compress(data) {
      check(data);
      const out = deflate(data, { level, ...SETTINGS, legacyHash: true });
      return out.length < data.length ? out : null;
    },
    decompress,
  };
}
