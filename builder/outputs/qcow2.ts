import { writeQcow2 } from '../formats/qcow2.ts';
import { diskBlocks } from './disk.ts';
import { writePositioned } from './file.ts';
import type { OutputWrite } from './types.ts';

export const write: OutputWrite = (dest, ctx, options) =>
  writePositioned(dest, (sink) => writeQcow2(diskBlocks(ctx.disk, 1 << 16), sink, { compression: options.compression === 'zlib' ? 'zlib' : 'none' }));
