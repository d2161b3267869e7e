import { applyTree } from '../inputs/apply.ts';
import { readArchive } from '../inputs/archive.ts';
import { decompressBytes } from '../inputs/decompress.ts';
import { readContent } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { bzImageVersion } from './bzimage.ts';
import { findKernel, UNVERSIONED_IMAGES, type KernelInfo } from './find.ts';
import { resolveTreePath } from '../tree/walk.ts';

/** LinuxKit kernel images ship their modules as a tar inside the image. */
const LINUXKIT_MODULES = 'kernel.tar';

/**
 * Finds the kernel in a kernel input's tree, whatever its layout (Debian, Fedora/Arch,
 * Talos-style, LinuxKit), and checks the image against its modules: the release string in
 * the bzImage header must name the module directory used, or the initramfs would carry
 * modules the kernel refuses to load. LinuxKit's kernel.tar is unpacked into the tree.
 */
export async function loadKernel(tree: FileTree, origin = 'kernel input'): Promise<{ tree: FileTree; kernel: KernelInfo }> {
  const tarPath = resolveTreePath(tree, LINUXKIT_MODULES);
  const tar = tarPath === undefined ? undefined : tree.resolve(tarPath);
  if (tar?.type === 'file') {
    const where = `${origin} ${LINUXKIT_MODULES}`;
    applyTree(tree, await readArchive(decompressBytes(await readContent(tar.content), where), where), where);
  }

  const headers = new Map<string, string | undefined>();
  for (const image of UNVERSIONED_IMAGES) {
    const path = resolveTreePath(tree, image);
    const e = path === undefined ? undefined : tree.resolve(path);
    if (path !== undefined && e?.type === 'file') headers.set(path, bzImageVersion(await readContent(e.content)));
  }
  const kernel = findKernel(tree, (path) => headers.get(path));
  const said = headers.has(kernel.vmlinuzPath) ? headers.get(kernel.vmlinuzPath) : bzImageVersion(await readContent(kernel.vmlinuz));
  if (said !== undefined && said !== kernel.version) {
    throw new InputError(`${origin}: the kernel image ${kernel.vmlinuzPath} is release ${said}, but its modules are for ${kernel.version}`, {
      hint: 'the kernel and its modules must come from the same build',
    });
  }
  return { tree, kernel };
}
