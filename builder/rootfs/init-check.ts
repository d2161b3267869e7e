import { archByElfMachine, findArch } from '../arch.ts';
import { isElf, readDynamic } from '../elf/index.ts';
import { resolveTreePath } from '../tree/walk.ts';
import { readContent } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';


export interface RootfsLayer {
  origin: string;
  tree: FileTree;
}

/** The inputs whose own tree has an entry at `path` (after following the merged tree's links), last first. */
function providers(layers: readonly RootfsLayer[], path: string): string[] {
  return layers.filter((l) => l.tree.get(path) !== undefined).map((l) => l.origin).reverse();
}

const describe = (layers: readonly RootfsLayer[]) => layers.map((l) => l.origin).join(', ');

/**
 * The root's /sbin/init must exist, be a file after its symlinks (merged /usr: sbin -> usr/sbin,
 * usr/sbin/init -> ../lib/systemd/systemd), and run on the profile's arch: an ELF of that
 * machine, or a `#!` script whose interpreter is one. A wrong one would only show at boot as a
 * kernel panic, so the build refuses it and names the input it came from.
 */
export async function checkRootInit(root: FileTree, layers: readonly RootfsLayer[], arch: string): Promise<void> {
  const real = resolveTreePath(root, 'sbin/init');
  const entry = real === undefined ? undefined : root.resolve(real);
  if (!entry || entry.type !== 'file') {
    const what = real === undefined ? 'is missing or a dangling symlink' : `resolves to /${real}, which is a ${entry?.type ?? 'missing entry'}`;
    throw new InputError(`the rootfs has no /sbin/init: it ${what} in rootfs.inputs (${describe(layers)})`, {
      hint: 'an oci: image needs an init (e.g. systemd-sysv for rootfs.os.init: systemd); a busybox rootfs needs an overlay (dir:) that provides sbin/init',
    });
  }
  await checkArch(root, layers, real!, arch, 0);
}

async function checkArch(root: FileTree, layers: readonly RootfsLayer[], path: string, arch: string, depth: number): Promise<void> {
  const e = root.resolve(path);
  if (!e || e.type !== 'file') return;
  const head = (await readContent(e.content)).subarray(0, 4096);
  const from = providers(layers, path)[0] ?? describe(layers);
  const shown = path === 'sbin/init' ? '/sbin/init' : `/sbin/init (/${path})`;
  if (isElf(head)) {
    const want = findArch(arch)?.elfMachine;
    let machine: number;
    try {
      machine = readDynamic(await readContent(e.content)).machine;
    } catch (err) {
      throw new InputError(`${from}: ${shown} is not a readable ELF program (${(err as Error).message})`);
    }
    if (want !== undefined && machine !== want) {
      const name = archByElfMachine(machine)?.uname ?? `ELF machine ${machine}`;
      throw new InputError(`${from}: ${shown} is built for ${name}, but the profile's arch is ${arch}`, {
        hint: `use the ${arch} image of this input (oci: inputs take platform:, e.g. linux/amd64)`,
      });
    }
    return;
  }
  const text = new TextDecoder().decode(head);
  if (text.startsWith('#!') && depth < 4) {
    const interp = text.slice(2).split('\n')[0]!.trim().split(/\s+/)[0] ?? '';
    const real = interp ? resolveTreePath(root, interp) : undefined;
    if (!real || root.resolve(real)?.type !== 'file') {
      throw new InputError(`${from}: ${shown} is a script for ${interp || '(no interpreter)'}, which is not in the rootfs`, { hint: 'add the interpreter to rootfs.inputs' });
    }
    await checkArch(root, layers, real, arch, depth + 1);
    return;
  }
  throw new InputError(`${from}: ${shown} is neither an ELF program nor a #! script`);
}
