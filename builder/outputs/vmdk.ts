import { GRAIN_SIZE, writeVmdk } from '../formats/vmdk.ts';
import { diskBlocks, type DiskImage } from './disk.ts';
import { writeChunks } from './file.ts';
import type { OutputWrite } from './types.ts';

/** The disk as a stream-optimized VMDK named `fileName` (its descriptor's extent line). */
export function vmdkOf(disk: DiskImage, fileName: string): AsyncGenerator<Uint8Array> {
  // The content id names the content: the same disk always gets the same id.
  return writeVmdk(diskBlocks(disk, GRAIN_SIZE * 512), { fileName, cid: parseInt(disk.sha256.slice(0, 8), 16) });
}

/** The name the descriptor gives the extent, in the build directory and in an OVA. */
export const VMDK_FILE = 'disk.vmdk';

export const write: OutputWrite = (dest, ctx) => writeChunks(dest, vmdkOf(ctx.disk, VMDK_FILE));
