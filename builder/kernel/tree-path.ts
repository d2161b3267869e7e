import type { FileTree } from '../tree/tree.ts';

/**
 * Resolves a path inside an image tree the way the image's kernel would: symlinks in any
 * component are followed, absolute targets from the tree root, `..` clamped at the root.
 * Needed because a merged-/usr tree has `lib -> usr/lib`, and kernels ship
 * `vmlinuz` symlinks. Returns the canonical tree path, or undefined when it dangles.
 */
export function resolveTreePath(tree: FileTree, path: string, maxLinks = 40): string | undefined {
  let links = 0;
  const resolved: string[] = [];
  const pending = path.split('/').filter((s) => s !== '' && s !== '.');
  while (pending.length) {
    const seg = pending.shift()!;
    if (seg === '..') {
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, seg].join('/');
    const e = tree.get(candidate);
    if (!e) return undefined;
    if (e.type === 'symlink') {
      if (++links > maxLinks) return undefined;
      if (e.target.startsWith('/')) resolved.length = 0;
      pending.unshift(...e.target.split('/').filter((s) => s !== '' && s !== '.'));
      continue;
    }
    resolved.push(seg);
  }
  return resolved.join('/');
}
