import { loadTreeFromHost } from '../tree/from-host.ts';
import { FileTree, type Entry } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';

/**
 * A host directory as a `dir:` input. The walk itself is the shared lstat walker; this
 * applies the input policy so nothing about the build host leaks into an image:
 * ownership is root, mtimes are 0 (a checkout's mtimes are just the checkout time), and
 * permissions keep only what git keeps, the execute bit: files become 0755 or 0644,
 * directories 0755. The umask of whoever cloned the repository cannot change the image.
 * Sockets are dropped: they are a running process's endpoints, never image content.
 */

export interface DirTreeOptions {
  /** Names this input in errors and log lines. */
  origin?: string;
  log?: (line: string) => void;
}

const HOST_NEUTRAL = { uid: 0, gid: 0, mtime: 0 } as const;

function neutral(e: Entry): Entry {
  switch (e.type) {
    case 'hardlink':
      return e;
    case 'file':
      return { ...e, ...HOST_NEUTRAL, mode: e.mode & 0o100 ? 0o755 : 0o644 };
    case 'dir':
      return { ...e, ...HOST_NEUTRAL, mode: 0o755 };
    case 'symlink':
      return { ...e, ...HOST_NEUTRAL, mode: 0o777 };
    default:
      return { ...e, ...HOST_NEUTRAL, mode: e.mode & 0o777 & ~0o022 };
  }
}

export async function treeFromDir(root: string, opts: DirTreeOptions = {}): Promise<FileTree> {
  const origin = opts.origin ?? `dir:${root}`;
  let host: FileTree;
  try {
    host = await loadTreeFromHost(root, {
      filter: (path, st) => {
        if (!st.isSocket()) return true;
        opts.log?.(`${origin}: skipping socket ${path}`);
        return false;
      },
    });
  } catch (err) {
    if (err instanceof InputError) throw new InputError(`${origin}: ${err.message}`, { cause: err });
    throw err;
  }
  const tree = new FileTree({ mode: 0o755, ...HOST_NEUTRAL });
  for (const [path, e] of host.walk()) {
    if (path !== '') tree.set(path, neutral(e));
  }
  return tree;
}
