import type { FileTree } from './tree.ts';

export type TreeWalk =
  | { kind: 'resolved'; path: string }
  /** A component that is not in the tree (`at` is the path up to it). */
  | { kind: 'missing'; at: string }
  /** More symlinks than `maxLinks` were followed (a loop, most likely). */
  | { kind: 'loop'; at: string };

export interface WalkOptions {
  /** Keep missing components as written instead of stopping (they are about to be created). */
  keepMissing?: boolean;
  /** Called for every symlink followed, with its tree path. */
  onSymlink?: (at: string) => void;
  maxLinks?: number;
}

const segments = (p: string) => p.split('/').filter((s) => s !== '' && s !== '.');

/**
 * Follows a path through the tree's own symlinks the way a kernel would on the image's root:
 * absolute targets start at the tree root and `..` stops there, so resolution never leaves
 * the tree and never touches the build host.
 */
export function walkTreePath(tree: FileTree, path: string, opts: WalkOptions = {}): TreeWalk {
  const maxLinks = opts.maxLinks ?? 40;
  const pending = segments(path);
  const resolved: string[] = [];
  let links = 0;
  while (pending.length) {
    const seg = pending.shift()!;
    if (seg === '..') {
      resolved.pop();
      continue;
    }
    const at = [...resolved, seg].join('/');
    const e = tree.get(at);
    if (!e && !opts.keepMissing) return { kind: 'missing', at };
    if (e?.type === 'symlink') {
      if (++links > maxLinks) return { kind: 'loop', at };
      opts.onSymlink?.(at);
      if (e.target.startsWith('/')) resolved.length = 0;
      pending.unshift(...segments(e.target));
      continue;
    }
    resolved.push(seg);
  }
  return { kind: 'resolved', path: resolved.join('/') };
}

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
