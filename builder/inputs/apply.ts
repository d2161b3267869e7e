import { baseName, FileTree, parentOf, type Entry } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { resolveTreePath } from '../tree/walk.ts';
import { containedPath } from './contain.ts';

/**
 * Layers `upper` onto `base` the way unpacking it onto a real root would: parent
 * directories are found through `base`'s own symlinks (confined to the tree, see
 * containedPath), so a package that ships `lib/x.so` keeps a merged-/usr `lib -> usr/lib`
 * intact instead of replacing the link with a directory. Later entries win; directories
 * merge; hard links follow their target to wherever it landed.
 *
 * A directory entry over a symlink to a directory keeps the symlink, as dpkg does (the
 * usual case: every package lists `lib/` while the base has `lib -> usr/lib`). OCI layers
 * pass `replaceDirSymlinks`, because a layer is a diff and one that lists a directory where
 * a symlink was means the path changed kind (containerd replaces it too).
 */
export function applyTree(base: FileTree, upper: FileTree, origin: string, opts: { under?: string; replaceDirSymlinks?: boolean } = {}): void {
  const under = opts.under ?? '';
  const restore = rememberInodes(base);
  const landed = new Map<string, string>();
  const links: [string, string][] = [];
  for (const [p, e] of upper.walk()) {
    const rel = under === '' ? p : p === '' ? under : `${under}/${p}`;
    if (rel === '') {
      if (e.type === 'dir') base.set('', e);
      continue;
    }
    const dest = containedPath(base, rel, origin);
    landed.set(p, dest);
    // Links last: their target may sort after them.
    if (e.type === 'hardlink') links.push([dest, e.target]);
    else if (e.type === 'dir' && !opts.replaceDirSymlinks && isDirSymlink(base, dest)) continue;
    // A directory over a directory keeps the lower one's children: directories merge.
    else base.set(dest, e);
  }
  for (const [dest, target] of links) {
    const to = landed.get(target);
    if (to === undefined) throw new InputError(`${origin}: hard link ${JSON.stringify(dest)} points at ${JSON.stringify(target)}, which is not in this input`);
    base.set(dest, { type: 'hardlink', target: to });
  }
  restore();
}


/**
 * Hard links in `base` name their file by path, but on a real filesystem they hold the
 * inode itself: deleting or replacing the file a link points at must leave the link with
 * the old content. Returns a function that, after changes, gives each link whose file was
 * deleted or replaced the old file back (the first such link in byte order takes the
 * inode, the others point at it).
 */
export function rememberInodes(base: FileTree): () => void {
  const links: { path: string; entry: Entry; owner: string; file: Entry }[] = [];
  for (const [p, e] of base.walk()) {
    if (e.type !== 'hardlink') continue;
    const owner = base.inodePath(p);
    links.push({ path: p, entry: e, owner, file: base.get(owner)! });
  }
  return () => {
    const moved = new Map<string, string>();
    for (const l of links) {
      if (base.get(l.path) !== l.entry || base.get(l.owner) === l.file) continue;
      const first = moved.get(l.owner);
      if (first === undefined) {
        moved.set(l.owner, l.path);
        base.set(l.path, l.file);
      } else base.set(l.path, { type: 'hardlink', target: first });
    }
  };
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/**
 * Applies one OCI image layer (image-spec "Representing Changes"): `.wh.NAME` deletes NAME
 * from the layers below, `.wh..wh..opq` hides everything the layers below had in its
 * directory; both only affect lower layers, so they are applied before the layer's own
 * entries, whatever their order in the tar. Whiteout files never reach the image.
 */
export function applyLayer(base: FileTree, layer: FileTree, origin: string): void {
  const opaque: string[] = [];
  const whiteouts: string[] = [];
  for (const p of layer.paths()) {
    const name = baseName(p);
    if (!name.startsWith(WHITEOUT)) continue;
    const e = layer.get(p)!;
    if (e.type === 'dir') throw new InputError(`${origin}: whiteout ${JSON.stringify(p)} is a directory`);
    if (name === OPAQUE) opaque.push(parentOf(p));
    else if (name.startsWith(`${WHITEOUT}${WHITEOUT}`)) throw new InputError(`${origin}: unknown whiteout ${JSON.stringify(p)}`);
    else {
      const hidden = name.slice(WHITEOUT.length);
      if (hidden === '' || hidden === '.' || hidden === '..') throw new InputError(`${origin}: invalid whiteout ${JSON.stringify(p)}`);
      whiteouts.push(parentOf(p) === '' ? hidden : `${parentOf(p)}/${hidden}`);
    }
    layer.delete(p);
  }
  const restore = rememberInodes(base);
  for (const dir of opaque) {
    const real = dir === '' ? '' : containedPath(base, dir, origin);
    if (real !== '' && base.get(real)?.type !== 'dir') continue;
    for (const child of base.children(real)) base.delete(real === '' ? child : `${real}/${child}`);
  }
  for (const p of whiteouts) base.delete(containedPath(base, p, origin));
  restore();
  applyTree(base, layer, origin, { replaceDirSymlinks: true });
}

function isDirSymlink(tree: FileTree, path: string): boolean {
  if (tree.get(path)?.type !== 'symlink') return false;
  const real = resolveTreePath(tree, path);
  return real !== undefined && tree.get(real)?.type === 'dir';
}
