import { archByElfMachine } from '../arch.ts';
import { readContent } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { resolveTreePath } from '../tree/walk.ts';

/**
 * The directories glibc's ld.so searches inside a tree, in its order: the directories of
 * the tree's own /etc/ld.so.conf (what ldconfig would put in ld.so.cache), then the
 * built-in system directories. Debian's ld.so knows the multiarch directories, Fedora's
 * the lib64 ones; both fall back to /lib and /usr/lib. Paths are tree paths (no leading /).
 */

export function multiarchTriplet(machine: number): string | undefined {
  return archByElfMachine(machine)?.multiarch;
}

export function systemLibraryDirs(machine: number, elfClass: 32 | 64): string[] {
  const triplet = multiarchTriplet(machine);
  return [
    ...(triplet ? [`lib/${triplet}`, `usr/lib/${triplet}`] : []),
    ...(elfClass === 64 ? ['lib64', 'usr/lib64'] : []),
    'lib',
    'usr/lib',
  ];
}

function treeFile(tree: FileTree, path: string) {
  const real = resolveTreePath(tree, path);
  const e = real === undefined ? undefined : tree.resolve(real);
  return e?.type === 'file' ? e : undefined;
}

async function treeText(tree: FileTree, path: string): Promise<string | undefined> {
  const e = treeFile(tree, path);
  return e ? new TextDecoder().decode(await readContent(e.content)) : undefined;
}

/** `include` patterns of ld.so.conf: only `*` inside the last component, as Debian and Fedora use. */
function expandInclude(tree: FileTree, pattern: string, fromDir: string): string[] {
  const abs = pattern.startsWith('/') ? pattern.slice(1) : `${fromDir}/${pattern}`;
  const slash = abs.lastIndexOf('/');
  const dir = slash < 0 ? '' : abs.slice(0, slash);
  const glob = abs.slice(slash + 1);
  const re = new RegExp(`^${glob.replace(/[\\^$.+?()[\]{}|]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
  const real = resolveTreePath(tree, dir);
  if (real === undefined) return [];
  return tree
    .children(real)
    .filter((n) => re.test(n))
    .map((n) => (dir === '' ? n : `${dir}/${n}`));
}

/** Directories listed by the tree's etc/ld.so.conf and the files it includes, in order. */
export async function ldSoConfDirs(tree: FileTree): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  const read = async (file: string, depth: number): Promise<void> => {
    if (depth > 8 || seen.has(file)) return;
    seen.add(file);
    const text = await treeText(tree, file);
    if (text === undefined) return;
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) continue;
      const inc = /^include\s+(.+)$/.exec(line);
      if (inc) {
        for (const pattern of inc[1]!.split(/\s+/)) for (const f of expandInclude(tree, pattern, 'etc')) await read(f, depth + 1);
      } else if (line.startsWith('/')) {
        // hwcap suffixes ("dir=TYPE") of old libc5 configs name the directory first.
        const dir = line.split(/[=\s]/)[0]!.replace(/^\/+|\/+$/g, '');
        if (dir && !out.includes(dir)) out.push(dir);
      }
    }
  };
  if (treeFile(tree, 'etc/ld.so.conf')) await read('etc/ld.so.conf', 0);
  // A tree of unpacked packages may lack libc-bin's ld.so.conf; its snippets still say what ldconfig would use.
  else for (const f of expandInclude(tree, '/etc/ld.so.conf.d/*.conf', 'etc')) await read(f, 1);
  return out;
}
