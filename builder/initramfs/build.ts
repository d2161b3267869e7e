import { gzipDeterministic } from '../util/gzip.ts';
import { writeCpio } from '../formats/cpio.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { zstdCompress } from '../inputs/zstd.ts';

export type InitramfsCompression = 'gzip' | 'zstd' | 'none';

/** The kernel option that must be `y` for the kernel to unpack an initramfs so compressed. */
const KERNEL_OPTION: Record<Exclude<InitramfsCompression, 'none'>, string> = { gzip: 'CONFIG_RD_GZIP', zstd: 'CONFIG_RD_ZSTD' };

/** Levels when the profile names none: the smallest images (the build pays for them once). */
export const DEFAULT_INITRAMFS_LEVEL = { gzip: 9, zstd: 19 } as const;

/**
 * cpio newc, then compressed deterministically (see util/gzip.ts and util/zstd.ts), so the
 * bytes are the same on every build host.
 */
export async function buildInitramfs(tree: FileTree, compression: InitramfsCompression, level?: number): Promise<Uint8Array> {
  const cpio = await writeCpio(tree);
  switch (compression) {
    case 'none':
      return cpio;
    case 'gzip': {
      const l = level ?? DEFAULT_INITRAMFS_LEVEL.gzip;
      if (!Number.isInteger(l) || l < 1 || l > 9) throw new InputError(`initramfs gzip level must be 1..9, got ${level}`);
      return gzipDeterministic(cpio, l as Parameters<typeof gzipDeterministic>[1]);
    }
    case 'zstd':
      return zstdCompress(cpio, level ?? DEFAULT_INITRAMFS_LEVEL.zstd);
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
