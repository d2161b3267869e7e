import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { writeTar, type TarEntry } from '../formats/tar.ts';
import { hostFileContent, textContent } from '../tree/content.ts';
import { INSTALL_SCRIPT, PAYLOAD_DIR } from '../release/installer-image.ts';
import { DEVICE_SCRIPT } from './device-script.ts';
import type { ReleaseSource } from './release.ts';

/**
 * A raw disk holding a tar of what the installer image carries (`ossify/install.sh` and
 * `ossify/payload/…`), to hand a release to a running device as a second disk or a USB
 * stick: `busybox tar -xf /dev/vdb` unpacks it, and the script upgrades from it. A tar is a
 * whole number of 512-byte blocks, so it is a valid raw disk as is.
 */
export async function writePayloadDisk(src: ReleaseSource, path: string): Promise<void> {
  const entries: TarEntry[] = [
    { type: 'dir', path: 'ossify', mode: 0o755 },
    { type: 'file', path: INSTALL_SCRIPT, mode: 0o755, content: textContent(DEVICE_SCRIPT) },
    { type: 'dir', path: PAYLOAD_DIR, mode: 0o755 },
    { type: 'file', path: `${PAYLOAD_DIR}/release.json`, mode: 0o644, content: textContent(src.releaseJson) },
    ...Object.entries(src.release.artifacts).map(([name, a]): TarEntry => ({ type: 'file', path: `${PAYLOAD_DIR}/${name}`, mode: 0o644, content: hostFileContent(src.path(name), a.size) })),
  ];
  await pipeline(Readable.from(writeTar(entries, { mtime: src.epoch })), createWriteStream(path));
}
