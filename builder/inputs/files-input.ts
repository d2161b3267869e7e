import { stat } from 'node:fs/promises';
import type { FileItem, Input } from '../profile/schema.ts';
import { hostFileContent, textContent } from '../tree/content.ts';
import { FileTree, normalizeTreePath, type Meta } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import type { InputKind } from './kind.ts';
import type { LoadedInput } from './types.ts';

type FilesSpec = Extract<Input, { files: unknown }>;

function owner(item: FileItem): { uid: number; gid: number } {
  if (!item.owner) return { uid: 0, gid: 0 };
  const [uid, gid] = item.owner.split(':').map(Number) as [number, number];
  return { uid, gid };
}

/**
 * `files:` entries written straight from the profile. Like `dir:` they carry nothing of the
 * build host but bytes: times are 0 (the build's epoch replaces them), ownership and modes
 * come from the profile or the defaults, a `source` file only lends its content and, for
 * the default mode, its execute bit.
 */
export async function loadFilesInput(input: FilesSpec, origin: string): Promise<LoadedInput> {
  const tree = new FileTree();
  for (const [i, item] of input.files.entries()) {
    const where = `${origin}: files[${i}] (${item.path})`;
    let path: string;
    try {
      path = normalizeTreePath(item.path, 'path');
    } catch (err) {
      throw new InputError(`${where}: ${(err as Error).message}`);
    }
    if (path === '') throw new InputError(`${where}: the path names the tree root`);
    const mode = 'mode' in item && item.mode !== undefined ? parseInt(item.mode, 8) : undefined;
    const meta = (m: number): Meta => ({ mode: mode ?? m, ...owner(item), mtime: 0 });
    if ('content' in item) {
      tree.set(path, { type: 'file', ...meta(0o644), content: textContent(item.content, where) });
    } else if ('source' in item) {
      const st = await stat(item.source).catch((err: NodeJS.ErrnoException) => {
        throw new InputError(`${where}: cannot read ${item.source}: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`);
      });
      if (!st.isFile()) throw new InputError(`${where}: ${item.source} is not a regular file`);
      tree.set(path, { type: 'file', ...meta(st.mode & 0o100 ? 0o755 : 0o644), content: hostFileContent(item.source, st.size) });
    } else if ('symlink' in item) {
      tree.set(path, { type: 'symlink', ...meta(0o777), target: item.symlink });
    } else {
      tree.set(path, { type: 'dir', ...meta(0o755) });
    }
  }
  return { tree, sources: [{ kind: 'files', name: `${input.files.length} entries` }] };
}

/** `files:`: entries written from the profile itself; not pinned. */
export const filesKind: InputKind<FilesSpec> = {
  origin: (input) => `files:[${input.files.map((f) => f.path).join(', ')}]`,
  load: (input, _ctx, origin) => loadFilesInput(input, origin),
  mapPaths: (input, at, fn) => ({ ...input, files: input.files.map((f, i) => ('source' in f ? { ...f, source: fn(f.source, [...at, 'files', i, 'source']) } : f)) }),
};
