import { gzipDeterministic } from '../util/gzip.ts';
import { writeCpio } from '../formats/cpio.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { zstdCompress } from '../inputs/zstd.ts';

export type InitramfsCompression = 'gzip' | 'zstd' | 'none';

/** The kernel option that must be `y` for the kernel to unpack an initramfs so compressed. */
const KERNEL_OPTION: Record<Exclude<InitramfsCompression, 'none'>, string> = { gzip: 'CONFIG_RD_GZIP', zstd: 'CONFIG_RD_ZSTD' };

const ZSTD_LEVEL = 19;

/**
 * cpio newc, then compressed deterministically (see util/gzip.ts), so the bytes are the
 * same on every build host.
 */
export async function buildInitramfs(tree: FileTree, compression: InitramfsCompression): Promise<Uint8Array> {
  const cpio = await writeCpio(tree);
  switch (compression) {
    case 'none':
      return cpio;
    case 'gzip': {
      return gzipDeterministic(cpio, 9);
    }
    case 'zstd':
      return zstdCompress(cpio, ZSTD_LEVEL);
  }
}

/** Refuses a compression the kernel cannot unpack (it would fail to boot with no useful message). */
export function checkInitramfsCompression(config: Map<string, string> | undefined, compression: InitramfsCompression, kernelVersion: string): void {
  if (compression === 'none' || !config) return;
  const option = KERNEL_OPTION[compression];
  if (config.get(option) !== 'y') {
    throw new InputError(`kernel ${kernelVersion} cannot unpack a ${compression} initramfs (${option} is not set)`, {
      hint: `use initramfs.compression: ${compression === 'zstd' ? 'gzip' : 'none'}`,
    });
  }
}
