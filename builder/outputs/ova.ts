import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ovfDescriptor, ovfManifest } from '../formats/ovf.ts';
import { writeTar } from '../formats/tar.ts';
import { bytesContent, hostFileContent } from '../tree/content.ts';
import { tempPathFor } from '../util/atomic.ts';
import { sha256Hex } from '../util/hash.ts';
import { writeChunks } from './file.ts';
import type { OutputWrite } from './types.ts';
import { VMDK_FILE as VMDK, vmdkOf } from './vmdk.ts';

/**
 * An OVA: a tar of the OVF descriptor (first, as the specification requires), the manifest
 * with each file's sha256, and the stream-optimized disk. The VMDK this build already wrote is
 * reused; otherwise one is made beside the OVA and removed after.
 */
export const write: OutputWrite = async (dest, ctx) => {
  const made = ctx.made.get('vmdk');
  const own = made ? undefined : tempPathFor(`${dest}.vmdk`);
  try {
    const vmdkPath = own ?? join(ctx.dir, made!.file);
    const vmdk = made ?? (await writeChunks(own!, vmdkOf(ctx.disk, VMDK)));
    const name = ctx.build.name;
    const ovf = new TextEncoder().encode(ovfDescriptor({ name, version: ctx.build.version, disk: { href: VMDK, size: vmdk.size, capacity: ctx.disk.size } }));
    const mf = new TextEncoder().encode(ovfManifest([{ name: `${name}.ovf`, sha256: sha256Hex(ovf) }, { name: VMDK, sha256: vmdk.sha256 }]));
    return await writeChunks(
      dest,
      writeTar(
        [
          { type: 'file', path: `${name}.ovf`, mode: 0o644, content: bytesContent(ovf, `${name}.ovf`) },
          { type: 'file', path: `${name}.mf`, mode: 0o644, content: bytesContent(mf, `${name}.mf`) },
          { type: 'file', path: VMDK, mode: 0o644, content: hostFileContent(vmdkPath, vmdk.size) },
        ],
        { mtime: ctx.build.epoch, keepOrder: true },
      ),
    );
  } finally {
    if (own) await rm(own, { force: true });
  }
};
