import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { requireTool, runOk } from './oracle.ts';

export function requireSquashfsOracles(): void {
  requireTool('unsquashfs', 'squashfs-tools');
  requireTool('mksquashfs', 'squashfs-tools');
  requireTool('rdsquashfs', 'squashfs-tools-ng');
  requireTool('sqfsdiff', 'squashfs-tools-ng');
  requireTool('gensquashfs', 'squashfs-tools-ng');
}

function q(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function oct(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/**
 * Describes `tree` as a gensquashfs pack file, with file contents staged under `stage`. This
 * is how the oracle image is made without root. Names are quoted; link and symlink targets
 * are taken verbatim to the end of the line (gensquashfs does not unquote them).
 */
export async function stageForGensquashfs(tree: FileTree, stage: string): Promise<string> {
  await mkdir(join(stage, 'blobs'), { recursive: true });
  const lines: string[] = [];
  let n = 0;
  for (const [p, e] of tree.walk()) {
    const path = `/${p}`;
    if (e.type === 'hardlink') {
      lines.push(`link ${q(path)} 0777 0 0 /${e.target}`);
      continue;
    }
    const own = `${oct(e.mode)} ${e.uid} ${e.gid}`;
    switch (e.type) {
      case 'dir':
        lines.push(`dir ${p === '' ? '/' : q(path)} ${own}`);
        break;
      case 'file': {
        const blob = `blobs/${n++}`;
        await writeFile(join(stage, blob), await readContent(e.content));
        lines.push(`file ${q(path)} ${own} ${blob}`);
        break;
      }
      case 'symlink':
        lines.push(`slink ${q(path)} ${own} ${e.target}`);
        break;
      case 'char':
      case 'block':
        lines.push(`nod ${q(path)} ${own} ${e.type === 'char' ? 'c' : 'b'} ${e.major} ${e.minor}`);
        break;
      case 'fifo':
        lines.push(`pipe ${q(path)} ${own}`);
        break;
      case 'socket':
        lines.push(`sock ${q(path)} ${own}`);
        break;
    }
    if (e.xattrs && Object.keys(e.xattrs).length > 0) throw new Error(`${path}: gensquashfs 1.2 ignores --xattr-file with a pack file; strip xattrs first`);
  }
  return `${lines.join('\n')}\n`;
}

/** Builds the reference image of `tree` with gensquashfs. */
export async function gensquashfsImage(
  tree: FileTree,
  dir: string,
  opts: { compressor: string; blockSize?: number; mtime: number },
): Promise<string> {
  const stage = join(dir, 'stage');
  await writeFile(join(dir, 'pack.txt'), await stageForGensquashfs(tree, stage));
  const out = join(dir, 'reference.sqfs');
  // The root's ownership comes from its `dir /` line (-d cannot take ids >= 2^31).
  const defaults = `mtime=${opts.mtime}`;
  const args = ['-F', join(dir, 'pack.txt'), '-D', stage, '-c', opts.compressor, '-b', String(opts.blockSize ?? 131072), '-d', defaults, '-q', '-f', out];
  runOk('gensquashfs', args);
  return out;
}

/**
 * The tree without extended attributes: the reference writer cannot take them from a pack
 * file, and sqfsdiff compares inode flavours (an inode with xattrs is an extended one).
 */
export function withoutXattrs(tree: FileTree): FileTree {
  const t = new FileTree();
  for (const [p, e] of tree.walk()) {
    if (e.type === 'hardlink' || !e.xattrs) t.set(p, e);
    else {
      const { xattrs: _drop, ...rest } = e;
      t.set(p, rest as typeof e);
    }
  }
  return t;
}

/** `unsquashfs -lln` without the parts that legitimately differ between writers. */
export function llsListing(image: string): string[] {
  const out = runOk('unsquashfs', ['-lln', '-d', '', image]);
  return out
    .split('\n')
    .filter((l) => /^[-dlcbps][-rwxsStT]{9} /.test(l))
    .map((l) => (l.startsWith('d') ? l.replace(/^(\S+ \S+\s+)\d+/, '$1<dir>') : l));
}
