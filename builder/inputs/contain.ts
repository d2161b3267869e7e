import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';

const MAX_LINKS = 40;

/**
 * Where an entry written at `path` really lands when the tree's own symlinks are followed
 * for its parent directories, the way dpkg or containerd would write it onto a real root:
 * `lib/x.so` under `lib -> usr/lib` lands at `usr/lib/x.so`. Resolution is confined to the
 * tree: absolute targets start at the tree root and `..` stops there, so no symlink can
 * reach outside the image, and nothing on the build host is ever followed. Components
 * that do not exist yet are kept as written (they become directories). The last component
 * is never followed: writing `a` replaces the symlink `a` itself.
 */
export function containedPath(tree: FileTree, path: string, origin: string): string {
  const segs = path.split('/').filter((s) => s !== '' && s !== '.');
  const last = segs.pop();
  if (last === undefined) return '';
  const resolved: string[] = [];
  const pending = segs;
  let links = 0;
  while (pending.length) {
    const seg = pending.shift()!;
    if (seg === '..') {
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, seg].join('/');
    const e = tree.get(candidate);
    if (e?.type === 'symlink') {
      if (++links > MAX_LINKS) throw new InputError(`${origin}: entry ${JSON.stringify(path)}: too many levels of symbolic links in its parents`);
      if (e.target.startsWith('/')) resolved.length = 0;
      pending.unshift(...e.target.split('/').filter((s) => s !== '' && s !== '.'));
      continue;
    }
    resolved.push(seg);
  }
  resolved.push(last);
  return resolved.join('/');
}
