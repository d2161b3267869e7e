import { collectBytes } from '../util/bytes.ts';
import { DEVICE_SCRIPT } from '../installer/device-script.ts';
import { type TarEntry, writeTar } from '../formats/tar.ts';
import { type Content, bytesContent, readContent, textContent } from '../tree/content.ts';
import { gzipAhead } from '../util/gzip-ahead.ts';

/** Inside the installer image: the on-device installer the entrypoint runs. */
export const INSTALL_SCRIPT = 'ossify/install.sh';

/** The installer image's first layer: busybox and the script, small and compressible, so gzip. */
export function baseLayerTar(busybox: Uint8Array, origin: string, epoch: number): Promise<Uint8Array> {
  const entries: TarEntry[] = [
    { type: 'dir', path: 'bin', mode: 0o755 },
    { type: 'file', path: 'bin/busybox', mode: 0o755, content: bytesContent(busybox, origin) },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'dir', path: 'ossify', mode: 0o755 },
    { type: 'file', path: INSTALL_SCRIPT, mode: 0o755, content: textContent(DEVICE_SCRIPT) },
  ];
  return collectBytes(writeTar(entries, { mtime: epoch }));
}

/**
 * Starts compressing the base layer as soon as the build knows its busybox, on a worker
 * thread (gzip-ahead.ts), so the installer image finds it done at the end of the build.
 */
export async function compressBaseLayerAhead(busybox: Content, epoch: number): Promise<void> {
  gzipAhead(await baseLayerTar(await readContent(busybox), busybox.origin, epoch));
}
