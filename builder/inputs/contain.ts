import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { walkTreePath } from '../tree/walk.ts';

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
  const w = walkTreePath(tree, segs.join('/'), { keepMissing: true, maxLinks: MAX_LINKS });
  // With keepMissing the walk can only end resolved or in a symlink loop.
  if (w.kind !== 'resolved') throw new InputError(`${origin}: entry ${JSON.stringify(path)}: too many levels of symbolic links in its parents`);
  return w.path === '' ? last : `${w.path}/${last}`;
}
