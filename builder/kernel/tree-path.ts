import type { FileTree } from '../tree/tree.ts';
import { walkTreePath } from '../tree/walk.ts';

/**
 * Resolves a path inside an image tree the way the image's kernel would: symlinks in any
 * component are followed, absolute targets from the tree root, `..` clamped at the root.
 * Needed because a merged-/usr tree has `lib -> usr/lib`, and kernels ship
 * `vmlinuz` symlinks. Returns the canonical tree path, or undefined when it dangles.
 */
export function resolveTreePath(tree: FileTree, path: string, maxLinks = 40): string | undefined {
  const w = walkTreePath(tree, path, { maxLinks });
  return w.kind === 'resolved' ? w.path : undefined;
}
