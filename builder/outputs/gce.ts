import { writeSparseTar } from '../formats/tar.ts';
import { gzipDeterministicStream } from '../util/gzip.ts';
import { diskBlocks } from './disk.ts';
import { writeChunks } from './file.ts';
import type { OutputWrite } from './types.ts';

/**
 * Google Compute Engine imports a gzip'd tar holding one file named disk.raw, made as
 * `tar --format=oldgnu -Sczf`: old-GNU sparse, so the disk's holes cost nothing.
 */
export const write: OutputWrite = (dest, ctx) =>
  writeChunks(dest, gzipDeterministicStream(writeSparseTar({ path: 'disk.raw', mode: 0o644, source: diskBlocks(ctx.disk, 1 << 16) }, { mtime: ctx.build.epoch }), 6));
