import { InputError } from '../../util/errors.ts';
import type { FileTree, InodeEntry } from '../../tree/tree.ts';
import { MAX_NAME_BYTES } from './constants.ts';
import type { FileData } from './data.ts';

const enc = new TextEncoder();

/** One inode of the image; several directory entries may share it (hard links). */
export interface PNode {
  entry: InodeEntry;
  /** The first path that names it (for messages). */
  path: string;
  ino: number;
  nlink: number;
  /** Directories: entries in byte order. */
  children?: { name: Uint8Array; node: PNode }[];
  parent?: PNode;
  data?: FileData;
  /** Inode reference (block << 16 | offset) once written. */
  ref?: number;
  /** Inode type code once written. */
  type?: number;
}

export interface Plan {
  root: PNode;
  inodeCount: number;
  /** Regular-file inodes in the order their data is written (tree order). */
  files: PNode[];
  /** Total bytes of distinct regular-file inodes. */
  dataBytes: number;
  maxMtime: number;
}

/**
 * Resolves the tree into inodes: hard links collapse onto their target's inode, inode
 * numbers follow the order inodes are written (children before their directory, the
 * root last), and everything squashfs cannot represent is refused before a byte is written.
 */
export function planTree(tree: FileTree): Plan {
  const byPath = new Map<string, PNode>();
  let maxMtime = 0;

  const canonical = (path: string): string => {
    let p = path;
    for (let hops = 0; ; hops++) {
      const e = tree.get(p);
      if (!e) throw new InputError(`hard link ${JSON.stringify(path)} points to ${JSON.stringify(p)}, which is not in the tree`);
      if (e.type !== 'hardlink') {
        if (e.type === 'dir') throw new InputError(`hard link ${JSON.stringify(path)} points to a directory`);
        return p;
      }
      if (hops > 64) throw new InputError(`hard link loop at ${JSON.stringify(path)}`);
      p = e.target;
    }
  };

  const nodeFor = (path: string, entry: InodeEntry): PNode => {
    let n = byPath.get(path);
    if (!n) {
      checkMeta(path, entry);
      if (entry.mtime > maxMtime) maxMtime = entry.mtime;
      n = { entry, path, ino: 0, nlink: 0 };
      byPath.set(path, n);
    }
    return n;
  };

  const build = (dirPath: string, dirEntry: InodeEntry): PNode => {
    const dir = nodeFor(dirPath, dirEntry);
    dir.children = [];
    let subdirs = 0;
    for (const name of tree.children(dirPath)) {
      const nameBytes = checkName(dirPath, name);
      const p = dirPath === '' ? name : `${dirPath}/${name}`;
      const e = tree.get(p)!;
      let node: PNode;
      if (e.type === 'dir') {
        node = build(p, e);
        node.parent = dir;
        subdirs++;
      } else {
        const cp = e.type === 'hardlink' ? canonical(p) : p;
        node = nodeFor(cp, tree.get(cp) as InodeEntry);
      }
      node.nlink++;
      dir.children.push({ name: nameBytes, node });
    }
    dir.nlink = 2 + subdirs;
    return dir;
  };

  const rootEntry = tree.get('');
  if (!rootEntry || rootEntry.type !== 'dir') throw new InputError('the tree root must be a directory');
  const root = build('', rootEntry);

  // Number inodes in write order: post-order, a shared inode at its first name.
  let next = 1;
  const files: PNode[] = [];
  const number = (dir: PNode) => {
    for (const { node } of dir.children!) {
      if (node.entry.type === 'dir') number(node);
      else if (node.ino === 0) node.ino = next++;
    }
    dir.ino = next++;
  };
  number(root);
  // Data goes in tree order (depth-first, byte order), each inode once.
  const seen = new Set<PNode>();
  const collect = (dir: PNode) => {
    for (const { node } of dir.children!) {
      if (node.entry.type === 'dir') collect(node);
      else if (node.entry.type === 'file' && !seen.has(node)) {
        seen.add(node);
        files.push(node);
      }
    }
  };
  collect(root);
  let dataBytes = 0;
  for (const f of files) if (f.entry.type === 'file') dataBytes += f.entry.content.size;
  return { root, inodeCount: next - 1, files, dataBytes, maxMtime };
}

function checkName(dir: string, name: string): Uint8Array {
  const where = dir === '' ? '/' : `/${dir}`;
  if (name === '' || name === '.' || name === '..') throw new InputError(`${where}: invalid entry name ${JSON.stringify(name)}`);
  if (name.includes('/') || name.includes('\0')) throw new InputError(`${where}: entry name ${JSON.stringify(name)} contains '/' or NUL`);
  const b = enc.encode(name);
  if (b.length > MAX_NAME_BYTES) throw new InputError(`${where}: entry name ${JSON.stringify(name.slice(0, 40))}… is ${b.length} bytes; squashfs allows ${MAX_NAME_BYTES}`);
  return b;
}

function checkMeta(path: string, e: InodeEntry): void {
  const where = `/${path}`;
  const u32 = (v: number, what: string) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new InputError(`${where}: ${what} ${v} does not fit squashfs (0..4294967295)`);
  };
  u32(e.uid, 'uid');
  u32(e.gid, 'gid');
  u32(e.mtime, 'mtime');
  if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777) throw new InputError(`${where}: mode ${e.mode} is not a permission mode (0..0o7777)`);
  if (e.type === 'char' || e.type === 'block') {
    if (!Number.isInteger(e.major) || e.major < 0 || e.major > 0xfff) throw new InputError(`${where}: device major ${e.major} out of range (0..4095)`);
    if (!Number.isInteger(e.minor) || e.minor < 0 || e.minor > 0xfffff) throw new InputError(`${where}: device minor ${e.minor} out of range (0..1048575)`);
  }
  if (e.type === 'symlink' && e.target.length === 0) throw new InputError(`${where}: symlink with an empty target`);
  if (e.type === 'symlink' && e.target.includes('\0')) throw new InputError(`${where}: symlink target contains NUL`);
  if (e.type === 'file' && (!Number.isSafeInteger(e.content.size) || e.content.size < 0)) throw new InputError(`${where}: bad file size ${e.content.size}`);
}
