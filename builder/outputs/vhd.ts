import { writeVhd } from '../formats/vhd.ts';
import { derivedGuid, guidToBytes } from '../util/guid.ts';
import { diskBlocks } from './disk.ts';
import { writePositioned } from './file.ts';
import type { OutputWrite } from './types.ts';

export const write: OutputWrite = (dest, ctx) =>
  writePositioned(dest, (sink) =>
    // The footer's unique id names the content: the same disk always gets the same id.
    writeVhd(diskBlocks(ctx.disk, 1 << 16), sink, { epoch: ctx.build.epoch, uniqueId: guidToBytes(derivedGuid('vhd', ctx.disk.sha256)) }),
  );
