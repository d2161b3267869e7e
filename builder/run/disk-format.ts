import { open } from 'node:fs/promises';
import { QCOW2_MAGIC } from '../formats/qcow2.ts';
import { VHD_COOKIE } from '../formats/vhd.ts';
import { VMDK_MAGIC } from '../formats/vmdk.ts';
import { InputError } from '../util/errors.ts';

/** QEMU's name for a disk image's format (`-drive format=`). */
export type QemuDiskFormat = 'raw' | 'qcow2' | 'vpc' | 'vmdk';

/**
 * The format of a disk image, from its bytes, never its name: qcow2 and VMDK by the magic at
 * the start, a VHD by the footer cookie at its end (a fixed VHD) or start (a dynamic one);
 * anything else is raw. With `refuseArchives` (the disk to boot), an archive (an OVA, the GCE
 * tar.gz) is refused with what to do; an extra disk may well be a tar on purpose.
 */
export async function detectDiskFormat(path: string, opts: { refuseArchives?: boolean } = {}): Promise<QemuDiskFormat> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(512);
    await fh.read(head, 0, 512, 0);
    const tail = Buffer.alloc(512);
    if (size >= 512) await fh.read(tail, 0, 512, size - 512);
    if (head.readUInt32BE(0) === QCOW2_MAGIC) return 'qcow2';
    if (head.readUInt32LE(0) === VMDK_MAGIC) return 'vmdk';
    if (tail.toString('latin1', 0, 8) === VHD_COOKIE || head.toString('latin1', 0, 8) === VHD_COOKIE) return 'vpc';
    if (!opts.refuseArchives) return 'raw';
    if (head[0] === 0x1f && head[1] === 0x8b) {
      throw new InputError(`${path} is a gzip archive, not a disk image`, { hint: 'for the gce output, boot disk.raw (or unpack it: tar --sparse -xzf)' });
    }
    if (head.toString('latin1', 257, 262) === 'ustar') {
      throw new InputError(`${path} is a tar archive (an OVA?), not a disk image`, { hint: 'boot the .vmdk inside it, or the build\'s disk.raw' });
    }
    return 'raw';
  } finally {
    await fh.close();
  }
}
