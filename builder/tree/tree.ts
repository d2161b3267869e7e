import type { Content } from './content.ts';
import { InputError } from '../util/errors.ts';

/** Metadata every inode carries. `mode` holds permission bits only (0o7777, incl. setuid/sticky). */
export interface Meta {
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Extended attributes by full name (`security.capability`, `user.foo`). */
  xattrs?: Record<string, Uint8Array>;
}

export type Entry =
  | (Meta & { type: 'file'; content: Content })
  | (Meta & { type: 'dir' })
  | (Meta & { type: 'symlink'; target: string })
  | (Meta & { type: 'char' | 'block'; major: number; minor: number })
  | (Meta & { type: 'fifo' | 'socket' })
  /** A hard link: shares the inode of the regular file at `target` (a tree path). */
  | { type: 'hardlink'; target: string };

export type EntryType = Entry['type'];
export type InodeEntry = Exclude<Entry, { type: 'hardlink' }>;

export const DEFAULT_DIR_META: Meta = { mode: 0o755, uid: 0, gid: 0, mtime: 0 };

/**
 * Tree paths are relative, `/`-separated, without `.` or `..` segments; the root is `''`.
 * Anything that would escape the tree is refused here, once, for every input kind.
 */
export function normalizeTreePath(p: string, what = 'path'): string {
  if (p.includes('\0')) throw new InputError(`${what} ${JSON.stringify(p)} contains a NUL byte`);
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') throw new InputError(`${what} ${JSON.stringify(p)} contains '..' and would escape the tree`);
    out.push(seg);
  }
  return out.join('/');
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

const enc = new TextEncoder();
/** Byte-order comparison of UTF-8 names: the order squashfs, cpio and our digests use. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(enc.encode(a), enc.encode(b));
}

/**
 * The in-memory file tree every stage passes along. Directories are implicit parents
 * too: setting `a/b/c` creates `a` and `a/b` with default directory metadata.
 */
export class FileTree {
  private readonly entries = new Map<string, Entry>();
  private readonly kids = new Map<string, Set<string>>();

  constructor(rootMeta: Meta = DEFAULT_DIR_META) {
    this.entries.set('', { type: 'dir', ...rootMeta });
    this.kids.set('', new Set());
  }

  get size(): number {
    return this.entries.size;
  }

  get(path: string): Entry | undefined {
    return this.entries.get(normalizeTreePath(path));
  }

  has(path: string): boolean {
    return this.entries.has(normalizeTreePath(path));
  }

  /** Adds or replaces an entry. A non-directory in the way of a parent is replaced by a directory. */
  set(path: string, entry: Entry): void {
    const p = normalizeTreePath(path);
    if (p === '') {
      if (entry.type !== 'dir') throw new InputError('the tree root must be a directory');
      this.entries.set('', entry);
      return;
    }
    this.ensureDir(parentOf(p));
    const old = this.entries.get(p);
    if (old && old.type === 'dir' && entry.type !== 'dir') this.delete(p);
    if (!old || (old.type === 'dir') !== (entry.type === 'dir')) {
      this.kids.get(parentOf(p))!.add(baseName(p));
      if (entry.type === 'dir' && !this.kids.has(p)) this.kids.set(p, new Set());
    }
    this.entries.set(p, entry);
  }

  /** Creates a directory (and parents) unless one exists. */
  ensureDir(path: string, meta: Meta = DEFAULT_DIR_META): void {
    const p = normalizeTreePath(path);
    const cur = this.entries.get(p);
    if (cur?.type === 'dir') return;
    this.set(p, { type: 'dir', ...meta });
  }

  /** Removes an entry and, for a directory, everything under it. */
  delete(path: string): boolean {
    const p = normalizeTreePath(path);
    if (p === '' || !this.entries.has(p)) return false;
    for (const child of [...(this.kids.get(p) ?? [])]) this.delete(p === '' ? child : `${p}/${child}`);
    this.kids.delete(p);
    this.entries.delete(p);
    this.kids.get(parentOf(p))?.delete(baseName(p));
    return true;
  }

  /** Names in a directory, in byte order. */
  children(dir: string): string[] {
    const set = this.kids.get(normalizeTreePath(dir));
    return set ? [...set].sort(compareBytes) : [];
  }

  /** Every path, parents before children, siblings in byte order (depth-first). */
  paths(): string[] {
    const out: string[] = [];
    const walk = (dir: string) => {
      for (const name of this.children(dir)) {
        const p = dir === '' ? name : `${dir}/${name}`;
        out.push(p);
        if (this.entries.get(p)!.type === 'dir') walk(p);
      }
    };
    out.push('');
    walk('');
    return out;
  }

  *walk(): Generator<[string, Entry]> {
    for (const p of this.paths()) yield [p, this.entries.get(p)!];
  }

  /** Layers `upper` onto this tree, optionally under `target`. Later entries win; directories merge. */
  overlay(upper: FileTree, target = ''): void {
    const base = normalizeTreePath(target);
    for (const [p, e] of upper.walk()) {
      const dest = base === '' ? p : p === '' ? base : `${base}/${p}`;
      if (dest === '' && e.type === 'dir') {
        this.entries.set('', e);
        continue;
      }
      const shifted: Entry = e.type === 'hardlink' ? { type: 'hardlink', target: base === '' ? e.target : `${base}/${e.target}` } : e;
      this.set(dest, shifted);
    }
  }

  /**
   * Makes the tree reproducible: every mtime becomes `epoch`, and ownership is forced when
   * the profile asks for it (`allRoot`). Names are already kept in byte order.
   */
  normalise(opts: { epoch: number; allRoot?: boolean }): void {
    for (const [p, e] of this.entries) {
      if (e.type === 'hardlink') continue;
      const n = { ...e, mtime: opts.epoch };
      if (opts.allRoot) {
        n.uid = 0;
        n.gid = 0;
      }
      this.entries.set(p, n);
    }
  }

  /** Resolves a hard link to the file entry it shares an inode with. */
  resolve(path: string): InodeEntry | undefined {
    return this.get(this.inodePath(path)) as InodeEntry | undefined;
  }

  /** The path of the entry that owns the inode at `path`: itself, or the file a hard link names. */
  inodePath(path: string): string {
    let p = normalizeTreePath(path);
    for (let hops = 0; hops <= 64; hops++) {
      const e = this.entries.get(p);
      if (e?.type !== 'hardlink') return p;
      p = normalizeTreePath(e.target);
    }
    throw new InputError(`hard link loop at ${path}`);
  }
}
