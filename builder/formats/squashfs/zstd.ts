import { compress, decompress } from '@bokuweb/zstd-wasm';
import { initZstd } from '../../inputs/zstd.ts';
import { OssifyError } from '../../util/errors.ts';

export interface BlockCodec {
  compress(data: Uint8Array): Uint8Array | null;
  decompress(data: Uint8Array, maxSize: number): Uint8Array;
}

/**
 * zstd at a fixed level for inputs up to `maxSrc` bytes, through `@bokuweb/zstd-wasm` (the
 * same WebAssembly libzstd the input unpacker uses; initialised once per thread, so each
 * compression worker loads its own instance). Every block is one `ZSTD_compress` frame with
 * its content size recorded, as mksquashfs writes them: the bytes depend only on the input,
 * the level and the library version, never on the machine or the thread.
 */
export async function createZstd(level: number, maxSrc: number): Promise<BlockCodec> {
  await initZstd();
  return {
    compress(data) {
      if (data.length > maxSrc) throw new Error(`zstd: input of ${data.length} bytes exceeds ${maxSrc}`);
      let out: Uint8Array;
      try {
        out = compress(data, level);
      } catch (err) {
        throw new OssifyError(`zstd: compression failed: ${(err as Error).message}`, { cause: err });
      }
      return out.length < data.length ? out : null;
    },
    decompress(data, maxSize) {
      let out: Uint8Array;
      try {
        out = decompress(data, { defaultHeapSize: Math.max(maxSize, 1) });
      } catch (err) {
        throw new OssifyError('zstd: corrupt block', { cause: err });
      }
      if (out.length > maxSize) throw new OssifyError('zstd: block larger than the block size');
      return out;
    },
  };
}
