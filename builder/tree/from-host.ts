import type { Stats } from 'node:fs';
import { closeSync, openSync, readSync } from 'node:fs';
import { lstat, open, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, OssifyError } from '../util/errors.ts';
import type { Content } from './content.ts';
import { compareBytes, FileTree, type Entry, type Meta } from './tree.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface FromHostOptions {
  /** Called for entries squashfs-irrelevant callers may want to skip; return false to skip. */
  filter?: (treePath: string, st: Stats) => boolean;
}

/**
 * Loads a host directory into a FileTree with lstat semantics: symlinks stay symlinks,
 * files sharing dev+inode become hard links to the first path (in byte order), devices,
 * fifos and sockets are kept. Contents are referenced, not read. Extended attributes are
 * not read (Node has no xattr API).
 */
export async function loadTreeFromHost(dir: string, opts: FromHostOptions = {}): Promise<FileTree> {
  let rootSt: Stats;
  try {
    rootSt = await lstat(dir);
  } catch (err) {
    throw new InputError(`${dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, { cause: err });
  }
  if (!rootSt.isDirectory()) throw new InputError(`${dir} is not a directory`);
  const tree = new FileTree(meta(rootSt));
  const inodes = new Map<string, string>();

  const walk = async (hostDir: string, treeDir: string): Promise<void> => {
    const raw = await readdir(hostDir, { encoding: 'buffer' });
    const names = raw.map((b) => {
      try {
        return utf8.decode(b);
      } catch {
        throw new InputError(`${join(hostDir, b.toString('latin1'))}: file name is not valid UTF-8`);
      }
    });
    names.sort(compareBytes);
    const stats = await Promise.all(names.map((n) => lstat(join(hostDir, n))));
    const subdirs: [string, string][] = [];
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      const st = stats[i]!;
      const hostPath = join(hostDir, name);
      const treePath = treeDir === '' ? name : `${treeDir}/${name}`;
      if (opts.filter && !opts.filter(treePath, st)) continue;
      if (!st.isDirectory() && st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        const first = inodes.get(key);
        if (first !== undefined) {
          tree.set(treePath, { type: 'hardlink', target: first });
          continue;
        }
        inodes.set(key, treePath);
      }
      const m = meta(st);
      let e: Entry;
      if (st.isDirectory()) {
        e = { type: 'dir', ...m };
        subdirs.push([hostPath, treePath]);
      } else if (st.isFile()) {
        e = { type: 'file', ...m, content: hostContent(hostPath, st.size) };
      } else if (st.isSymbolicLink()) {
        const t = await readlink(hostPath, { encoding: 'buffer' });
        let target: string;
        try {
          target = utf8.decode(t);
        } catch {
          throw new InputError(`${hostPath}: symlink target is not valid UTF-8`);
        }
        e = { type: 'symlink', ...m, target };
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        e = { type: st.isCharacterDevice() ? 'char' : 'block', ...m, ...splitDev(st.rdev) };
      } else if (st.isFIFO()) {
        e = { type: 'fifo', ...m };
      } else if (st.isSocket()) {
        e = { type: 'socket', ...m };
      } else {
        throw new InputError(`${hostPath}: unsupported file type`);
      }
      tree.set(treePath, e);
    }
    for (const [h, t] of subdirs) await walk(h, t);
  };
  await walk(dir, '');
  return tree;
}

const CHUNK = 1 << 20;

/**
 * Contents that can also be read in one blocking call. For a small file that is far
 * cheaper than an asynchronous open/read/close round trip, and writers of trees with tens
 * of thousands of small files use it.
 */
export interface SyncReadable {
  /** The whole contents; a view into `scratch` when it has room (valid until its next use). */
  readAllSync(scratch?: Uint8Array): Uint8Array;
}

export function isSyncReadable(c: object): c is SyncReadable {
  return typeof (c as Partial<SyncReadable>).readAllSync === 'function';
}

/**
 * A host file read with positioned reads into buffers sized to what is left: a small file
 * costs one open, one read and one exact-size buffer (trees have tens of thousands of them),
 * where a read stream would allocate its full high-water mark each time. One byte more than
 * expected is asked for at the end, so a file that grew is noticed, as is one that shrank.
 */
export function hostContent(path: string, size: number): Content & SyncReadable {
  return {
    size,
    origin: path,
    readAllSync(scratch) {
      const fd = openSync(path, 'r');
      try {
        // One byte of room more than expected: a file that grew is caught in the same read.
        const buf = scratch && scratch.length > size ? scratch.subarray(0, size + 1) : Buffer.allocUnsafe(size + 1);
        let got = 0;
        for (;;) {
          const n = readSync(fd, buf, got, buf.length - got, got);
          if (n === 0) break;
          got += n;
          if (got > size) break;
        }
        if (got !== size) throw new OssifyError(`${path} changed while being read: expected ${size} bytes, got ${got > size ? 'more' : got}`);
        return buf.subarray(0, size);
      } finally {
        closeSync(fd);
      }
    },
    async *stream() {
      const fh = await open(path, 'r');
      try {
        let pos = 0;
        for (;;) {
          const want = Math.min(CHUNK, size - pos + 1);
          const buf = Buffer.allocUnsafe(want);
          const { bytesRead } = await fh.read(buf, 0, want, pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          if (pos > size) break;
          yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
        }
        if (pos !== size) {
          const now = await stat(path).catch(() => undefined);
          throw new OssifyError(`${path} changed while being read: expected ${size} bytes, ${now ? `now ${now.size}` : 'it vanished'}`);
        }
      } finally {
        await fh.close();
      }
    },
  };
}

function meta(st: Stats): Meta {
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
}

/** glibc's major()/minor() of a Linux dev_t. */
export function splitDev(rdev: number): { major: number; minor: number } {
  const hi = Math.floor(rdev / 2 ** 32);
  const lo = rdev >>> 0;
  return {
    major: ((lo >>> 8) & 0xfff) | ((hi & ~0xfff) >>> 0),
    minor: ((lo & 0xff) | (((lo >>> 12) | ((hi & 0xfff) << 20)) & ~0xff)) >>> 0,
  };
}
