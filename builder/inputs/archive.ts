import { readTar } from '../tree/from-tar.ts';
import { FileTree, parentOf, type Entry } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';

/**
 * A tree that refuses, while an archive is read into it, any entry whose parent directory
 * is a symlink the same archive created: `evil -> /etc` followed by `evil/passwd` is the
 * classic tar-slip. A plain FileTree would quietly replace the symlink with a directory;
 * an archive that does this is malformed or hostile either way, so it is an error.
 */
class GuardedTree extends FileTree {
  guarding = true;
  constructor(private readonly origin: string) {
    super();
  }
  override set(path: string, entry: Entry): void {
    if (this.guarding) {
      for (let p = parentOf(path.replace(/\/+$/, '')); p !== ''; p = parentOf(p)) {
        const e = this.get(p);
        if (e?.type === 'symlink') {
          throw new InputError(
            `${this.origin}: archive entry ${JSON.stringify(path)} lies under the symlink ${JSON.stringify(p)} (-> ${JSON.stringify(e.target)}); refusing to write through a link`,
          );
        }
        if (e) break;
      }
    }
    super.set(path, entry);
  }
}

/** Reads one (already decompressed) tar stream into a fresh tree, under the rules above. */
export async function readArchive(chunks: AsyncIterable<Uint8Array> | Uint8Array, origin: string, opts: { binaryXattrs?: 'refuse' | 'drop' } = {}): Promise<FileTree> {
  const tree = new GuardedTree(origin);
  await readTar(chunks, { origin, into: tree, ...opts });
  tree.guarding = false;
  return tree;
}
