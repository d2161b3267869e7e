import { writeSparseTar } from '../formats/tar.ts';
import { gzipDeterministicStream } from '../util/gzip.ts';
import { diskBlocks } from './disk.ts';
import { writeChunks } from './file.ts';
import type { OutputWrite } from './types.ts';

const GiB = 2 ** 30;

/**
 * Google Compute Engine imports a gzip'd tar holding one file named disk.raw, made as
 * `tar --format=oldgnu -Sczf`: old-GNU sparse, so the disk's holes cost nothing. Its size
 * must be whole GiB, so the disk is padded with a hole to the next one (as Google's guide
 * does with `qemu-img resize`); the primary GPT stays valid, the backup is then not at the end.
 */
export const write: OutputWrite = (dest, ctx) => {
  const source = { ...diskBlocks(ctx.disk, 1 << 16), size: Math.ceil(ctx.disk.size / GiB) * GiB };
  return writeChunks(dest, gzipDeterministicStream(writeSparseTar({ path: 'disk.raw', mode: 0o644, source }, { mtime: ctx.build.epoch }), 6));
};
