import { zstdCodec } from '../../util/zstd.ts';
import { OssifyError } from '../../util/errors.ts';

export interface BlockCodec {
  readonly engine: string;
  compress(data: Uint8Array): Uint8Array | null;
  decompress(data: Uint8Array, maxSize: number): Uint8Array;
}

/**
 * zstd at a fixed level for inputs up to `maxSrc` bytes. Every block is one frame with its
 * content size recorded, as mksquashfs writes them: the bytes depend only on the input and
 * the level, never on the machine, the thread or which engine (util/zstd.ts) ran.
 */
export async function createZstd(level: number, maxSrc: number): Promise<BlockCodec> {
  const z = await zstdCodec();
  return {
    engine: z.engine === 'node' ? `node:zlib zstd ${process.versions.zstd}` : 'WebAssembly zstd',
    compress(data) {
      if (data.length > maxSrc) throw new Error(`zstd: input of ${data.length} bytes exceeds ${maxSrc}`);
      let out: Uint8Array;
      try {
        out = z.compress(data, level);
      } catch (err) {
        throw new OssifyError(`zstd: compression failed: ${(err as Error).message}`, { cause: err });
      }
      return out.length < data.length ? out : null;
    },
    decompress(data, maxSize) {
      try {
        return z.decompress(data, maxSize);
      } catch (err) {
        throw new OssifyError('zstd: corrupt block', { cause: err });
      }
    },
  };
}
