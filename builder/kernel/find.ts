import { readContent, type Content } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { resolveTreePath } from '../tree/walk.ts';

export interface KernelInfo {
  /** The module directory name, `uname -r` of the booted kernel. */
  version: string;
  vmlinuz: Content;
  /** Where the kernel image sits in the input tree (canonical, symlinks resolved). */
  vmlinuzPath: string;
  /** `lib/modules/<version>` or `usr/lib/modules/<version>` (canonical), whether or not present. */
  modulesDir: string;
  /** `boot/config-<version>` when the package ships it. */
  configPath?: string;
}

/** Kernel images whose file name carries no version: Talos-style and LinuxKit. */
export const UNVERSIONED_IMAGES = ['boot/vmlinuz', 'kernel'] as const;

/** The version of the one module directory in the tree, if there is exactly one. */
function soleModulesVersion(tree: FileTree): string | undefined {
  const versions = new Set<string>();
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const dir = resolveTreePath(tree, base);
    if (dir === undefined || tree.get(dir)?.type !== 'dir') continue;
    for (const v of tree.children(dir)) if (tree.get(`${dir}/${v}`)?.type === 'dir') versions.add(v);
  }
  return versions.size === 1 ? [...versions][0] : undefined;
}

/**
 * Finds the one kernel in a tree: Debian's `boot/vmlinuz-<version>`, the
 * `(usr/)lib/modules/<version>/vmlinuz` layout of Fedora and Arch, or, when neither is
 * there, an image without a version in its name: Talos-style `boot/vmlinuz` or LinuxKit's
 * `kernel` (its `kernel.tar` of modules must already be unpacked, see loadKernel). Their
 * version is the one module directory's name, else what `imageVersion` reads from the
 * image itself. Several kernels are an error rather than a guess, because booting the
 * wrong one would look like success.
 */
export function findKernel(tree: FileTree, imageVersion?: (path: string) => string | undefined): KernelInfo {
  const found = new Map<string, string>();
  for (const name of tree.children('boot')) {
    const m = /^vmlinuz-(.+)$/.exec(name);
    if (!m) continue;
    const path = resolveTreePath(tree, `boot/${name}`);
    if (path !== undefined && tree.resolve(path)?.type === 'file') found.set(m[1]!, path);
  }
  for (const base of ['usr/lib/modules', 'lib/modules']) {
    const dir = resolveTreePath(tree, base);
    if (dir === undefined) continue;
    for (const ver of tree.children(dir)) {
      if (found.has(ver)) continue;
      const path = resolveTreePath(tree, `${dir}/${ver}/vmlinuz`);
      if (path !== undefined && tree.resolve(path)?.type === 'file') found.set(ver, path);
    }
  }
  if (found.size === 0) {
    for (const image of UNVERSIONED_IMAGES) {
      const path = resolveTreePath(tree, image);
      if (path === undefined || tree.resolve(path)?.type !== 'file') continue;
      const version = soleModulesVersion(tree) ?? imageVersion?.(path);
      if (version === undefined) {
        throw new InputError(`kernel image ${image} found, but not its version: no single lib/modules/<version> directory, and the image does not say`);
      }
      found.set(version, path);
      break;
    }
  }
  if (found.size === 0) {
    throw new InputError(
      'no kernel in the kernel input: expected boot/vmlinuz-<version>, lib/modules/<version>/vmlinuz, boot/vmlinuz (Talos) or kernel with kernel.tar (LinuxKit)',
      { hint: 'for Debian, use a linux-image-* package (e.g. deb: linux-image-cloud-amd64 with depends: ["linux-image-*"])' },
    );
  }
  if (found.size > 1) {
    throw new InputError(`several kernels in the kernel input: ${[...found.keys()].sort().join(', ')}`, {
      hint: 'keep one with the input\'s include/exclude, or name the exact linux-image-<version> package',
    });
  }
  const [version, vmlinuzPath] = [...found][0]!;
  const file = tree.resolve(vmlinuzPath);
  if (file?.type !== 'file') throw new InputError(`kernel image ${vmlinuzPath} is not a regular file`);
  const info: KernelInfo = { version, vmlinuz: file.content, vmlinuzPath, modulesDir: modulesDirOf(tree, version) };
  const config = resolveTreePath(tree, `boot/config-${version}`);
  if (config !== undefined && tree.resolve(config)?.type === 'file') info.configPath = config;
  return info;
}

/** Debian 12 packages ship a real /lib; merged-/usr images have usr/lib with lib -> usr/lib. */
export function modulesDirOf(tree: FileTree, version: string): string {
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const dir = resolveTreePath(tree, `${base}/${version}`);
    if (dir !== undefined && tree.get(dir)?.type === 'dir') return dir;
  }
  return `lib/modules/${version}`;
}

/** `boot/config-<version>` as a map of CONFIG_* → value (`y`, `m`, a number or a quoted string). */
export async function readKernelConfig(tree: FileTree, kernel: KernelInfo): Promise<Map<string, string> | undefined> {
  if (!kernel.configPath) return undefined;
  const e = tree.resolve(kernel.configPath);
  if (e?.type !== 'file') return undefined;
  const out = new Map<string, string>();
  for (const line of new TextDecoder().decode(await readContent(e.content)).split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!.replace(/^"(.*)"$/, '$1'));
  }
  return out;
}
