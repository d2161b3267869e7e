import { FileTree, parentOf, type Entry } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { globMatcher } from './glob.ts';

export interface FilterOptions {
  include?: readonly string[] | undefined;
  exclude?: readonly string[] | undefined;
  target?: string | undefined;
}

/** True when `path` or one of its ancestors satisfies `match`: selecting a directory selects its contents. */
function selfOrAncestor(path: string, match: (p: string) => boolean): boolean {
  for (let p = path; p !== ''; p = parentOf(p)) if (match(p)) return true;
  return false;
}

/**
 * Applies an input's `include`/`exclude` globs and `target` directory. A path is kept when
 * it (or a directory above it) matches an include pattern and neither it nor a directory
 * above it matches an exclude pattern; directories leading to kept paths are kept with
 * their own metadata. A hard link whose file was filtered out takes over the file's inode,
 * so filtering never leaves a dangling link.
 */
export function applyFilters(tree: FileTree, opts: FilterOptions, origin: string): FileTree {
  const include = opts.include?.length ? globMatcher(opts.include) : undefined;
  const exclude = opts.exclude?.length ? globMatcher(opts.exclude) : undefined;
  let filtered = tree;
  if (include || exclude) {
    const keep = new Set<string>(['']);
    for (const p of tree.paths()) {
      if (p === '') continue;
      if (include && !selfOrAncestor(p, include)) continue;
      if (exclude && selfOrAncestor(p, exclude)) continue;
      for (let q = p; q !== '' && !keep.has(q); q = parentOf(q)) keep.add(q);
    }
    filtered = new FileTree(metaOfRoot(tree));
    // First surviving path of each dropped inode becomes the file; later links point at it.
    const movedInode = new Map<string, string>();
    for (const [p, e] of tree.walk()) {
      if (p === '' || !keep.has(p)) continue;
      let out: Entry = e;
      if (e.type === 'hardlink') {
        const owner = tree.inodePath(p);
        if (!keep.has(owner)) {
          const moved = movedInode.get(owner);
          if (moved === undefined) {
            movedInode.set(owner, p);
            out = tree.get(owner)!;
          } else {
            out = { type: 'hardlink', target: moved };
          }
        } else {
          out = { type: 'hardlink', target: owner };
        }
      }
      filtered.set(p, out);
    }
    if (filtered.size === 1 && tree.size > 1) {
      throw new InputError(`${origin}: include/exclude patterns leave nothing of this input`, {
        hint: `include: ${JSON.stringify(opts.include ?? [])}, exclude: ${JSON.stringify(opts.exclude ?? [])}`,
      });
    }
  }
  if (!opts.target) return filtered;
  const placed = new FileTree();
  placed.overlay(filtered, opts.target);
  return placed;
}

function metaOfRoot(tree: FileTree) {
  const root = tree.get('')!;
  if (root.type !== 'dir') throw new Error('tree root is not a directory');
  const { type: _type, ...meta } = root;
  return meta;
}

