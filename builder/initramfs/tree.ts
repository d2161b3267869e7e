import { textContent, type Content } from '../tree/content.ts';
import { FileTree, type Meta } from '../tree/tree.ts';
import type { ModulePlan } from '../kernel/modules.ts';
import { InputError } from '../util/errors.ts';
import { INIT_SCRIPT } from './init-script.ts';

export interface InitramfsSpec {
  /** A static busybox binary (it must not need a dynamic loader). */
  busybox: Content;
  modules: ModulePlan;
  kernelVersion: string;
  /** Timestamp of every entry (SOURCE_DATE_EPOCH). */
  epoch: number;
  /** Extra programs with their shared-library closures (see builder/elf), laid under the rest. */
  programs?: FileTree;
}

/** The file that lists modules for /init, one absolute path a line, in load order. */
export const MODULE_LIST_PATH = 'etc/ossify/modules';

/**
 * The initramfs as a tree: busybox, the planned modules (uncompressed), their load order
 * and /init. Only /dev/console is created statically: the kernel opens it for /init's
 * stdio before devtmpfs is mounted, and the failure line must reach a console.
 */
export function buildInitramfsTree(spec: InitramfsSpec): FileTree {
  if (spec.modules.kernelVersion !== spec.kernelVersion) {
    throw new Error(`module plan is for kernel ${spec.modules.kernelVersion}, not ${spec.kernelVersion}`);
  }
  const own = { uid: 0, gid: 0, mtime: spec.epoch };
  const dir: Meta = { mode: 0o755, ...own };
  const tree = new FileTree(dir);
  for (const d of ['bin', 'dev', 'etc', 'etc/ossify', 'lib', 'lib/modules', `lib/modules/${spec.kernelVersion}`, 'newroot', 'proc', 'sys']) {
    tree.set(d, { type: 'dir', ...dir });
  }
  if (spec.programs) addPrograms(tree, spec.programs, own);
  tree.set('bin/busybox', { type: 'file', mode: 0o755, ...own, content: spec.busybox });
  tree.set('dev/console', { type: 'char', mode: 0o600, ...own, major: 5, minor: 1 });

  const order: string[] = [];
  for (const m of spec.modules.modules) {
    // Parent directories of modules get the same fixed metadata as everything else.
    const parts = m.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (!tree.has(p)) tree.set(p, { type: 'dir', ...dir });
    }
    tree.set(m.path, { type: 'file', mode: 0o644, ...own, content: m.content });
    order.push(`/${m.path}\n`);
  }
  tree.set(MODULE_LIST_PATH, { type: 'file', mode: 0o644, ...own, content: textContent(order.join(''), 'initramfs module list') });
  tree.set('init', { type: 'file', mode: 0o755, ...own, content: textContent(INIT_SCRIPT, 'initramfs /init') });
  return tree;
}

/**
 * Programs keep their modes but, like everything else here, are owned by root and stamped
 * with the epoch. They go in first, so nothing of them can replace /init, busybox or the
 * module list. A /bin/sh among them is refused: the kernel would fall back to it when /init
 * fails, and the initramfs must reboot instead of offering a shell.
 */
function addPrograms(tree: FileTree, programs: FileTree, own: { uid: number; gid: number; mtime: number }): void {
  for (const [p, e] of programs.walk()) {
    if (p === '') continue;
    if (p === 'bin/sh') throw new InputError('initramfs.programs would add /bin/sh; the initramfs must not have a shell the kernel can fall back to');
    tree.set(p, e.type === 'hardlink' ? e : { ...e, ...own });
  }
}
