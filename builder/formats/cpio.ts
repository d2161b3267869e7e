import { collectBytes } from '../util/bytes.ts';
import type { FileTree, InodeEntry } from '../tree/tree.ts';
import { InputError, OssifyError } from '../util/errors.ts';

/**
 * cpio "newc" (SVR4 without checksums): the only format the Linux initramfs unpacker reads.
 *
 * Layout of one member: a 110-byte ASCII header ("070701" + 13 eight-digit hex fields),
 * the NUL-terminated name padded so header+name is a multiple of 4, then the data padded
 * to 4. The archive ends with a member named `TRAILER!!!`.
 */

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const MAX_U32 = 0xffff_ffff;

const S_IFMT = 0o170000;
const TYPE_BITS = {
  fifo: 0o010000,
  char: 0o020000,
  dir: 0o040000,
  block: 0o060000,
  file: 0o100000,
  symlink: 0o120000,
  socket: 0o140000,
} as const;

export interface CpioHeader {
  ino: number;
  /** Full st_mode: type bits and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  devmajor: number;
  devminor: number;
  rdevmajor: number;
  rdevminor: number;
  name: string;
}

export interface CpioMember extends CpioHeader {
  data: Uint8Array;
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function hex8(v: number, field: string, path: string): string {
  if (!Number.isInteger(v) || v < 0 || v > MAX_U32) {
    throw new InputError(`cpio: ${field} ${v} of ${JSON.stringify(path)} does not fit newc's 32-bit field`);
  }
  return v.toString(16).padStart(8, '0');
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** Header + name + padding for one member. */
export function encodeHeader(h: CpioHeader): Uint8Array {
  const name = enc.encode(h.name);
  const namesize = name.length + 1;
  const fields = [h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, h.devmajor, h.devminor, h.rdevmajor, h.rdevminor];
  const names = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'size', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor'];
  const head =
    MAGIC + fields.map((v, i) => hex8(v, names[i]!, h.name)).join('') + hex8(namesize, 'namesize', h.name) + '00000000';
  const total = HEADER_SIZE + namesize;
  const out = new Uint8Array(total + pad4(total));
  out.set(enc.encode(head), 0);
  out.set(name, HEADER_SIZE);
  return out;
}

interface Planned {
  path: string;
  entry: InodeEntry;
  ino: number;
  nlink: number;
  /** False for every hard link of a file but the last: newc carries the data once, at the end. */
  carriesData: boolean;
}

/** Follows hard links to the path holding the inode; only regular files may be hard-linked. */
function inodePath(tree: FileTree, path: string): string {
  let p = path;
  for (let hops = 0; ; hops++) {
    const e = tree.get(p);
    if (!e) throw new InputError(`cpio: hard link ${JSON.stringify(path)} points to missing ${JSON.stringify(p)}`);
    if (e.type !== 'hardlink') {
      if (e.type !== 'file') throw new InputError(`cpio: hard link ${JSON.stringify(path)} must point to a regular file, not a ${e.type}`);
      return p;
    }
    if (hops > 64) throw new InputError(`cpio: hard link loop at ${JSON.stringify(path)}`);
    p = e.target;
  }
}

/**
 * Assigns inode numbers in path order (1, 2, …; the trailer keeps 0) so the archive depends
 * only on the tree. The root is omitted: the kernel unpacks into an existing rootfs and the
 * root's metadata would only be applied to `/` by some extractors.
 */
function plan(tree: FileTree): Planned[] {
  const paths = tree.paths().filter((p) => p !== '');
  const links = new Map<string, string[]>();
  for (const p of paths) {
    const e = tree.get(p)!;
    if (e.type === 'file' || e.type === 'hardlink') {
      const owner = e.type === 'file' ? p : inodePath(tree, p);
      let group = links.get(owner);
      if (!group) links.set(owner, (group = []));
      group.push(p);
    }
  }
  const subdirs = new Map<string, number>();
  for (const p of paths) {
    if (tree.get(p)!.type === 'dir') {
      const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
      subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1);
    }
  }
  const inoOf = new Map<string, number>();
  let next = 1;
  const out: Planned[] = [];
  for (const p of paths) {
    const e = tree.get(p)!;
    if (e.type === 'file' || e.type === 'hardlink') {
      const owner = e.type === 'file' ? p : inodePath(tree, p);
      const group = links.get(owner)!;
      let ino = inoOf.get(owner);
      if (ino === undefined) inoOf.set(owner, (ino = next++));
      const entry = tree.get(owner) as InodeEntry;
      out.push({ path: p, entry, ino, nlink: group.length, carriesData: group[group.length - 1] === p });
    } else {
      const nlink = e.type === 'dir' ? 2 + (subdirs.get(p) ?? 0) : 1;
      out.push({ path: p, entry: e, ino: next++, nlink, carriesData: true });
    }
  }
  return out;
}

function headerFor(m: Planned): CpioHeader {
  const e = m.entry;
  let filesize = 0;
  if (m.carriesData) {
    if (e.type === 'file') filesize = e.content.size;
    else if (e.type === 'symlink') filesize = enc.encode(e.target).length;
  }
  const dev = e.type === 'char' || e.type === 'block';
  return {
    ino: m.ino,
    mode: TYPE_BITS[e.type] | (e.mode & 0o7777),
    uid: e.uid,
    gid: e.gid,
    nlink: m.nlink,
    mtime: e.mtime,
    filesize,
    devmajor: 0,
    devminor: 0,
    rdevmajor: dev ? e.major : 0,
    rdevminor: dev ? e.minor : 0,
    name: m.path,
  };
}

/**
 * The archive as a stream of chunks, reading file contents only as they are emitted, so
 * an archive larger than memory can be piped into a compressor.
 */
export async function* cpioChunks(tree: FileTree): AsyncIterable<Uint8Array> {
  for (const m of plan(tree)) {
    const h = headerFor(m);
    yield encodeHeader(h);
    if (h.filesize === 0) continue;
    const e = m.entry;
    if (e.type === 'symlink') {
      const t = enc.encode(e.target);
      yield padded(t);
      continue;
    }
    if (e.type !== 'file') continue;
    let seen = 0;
    for await (const chunk of e.content.stream()) {
      seen += chunk.length;
      if (seen > h.filesize) break;
      yield chunk;
    }
    if (seen !== h.filesize) {
      throw new OssifyError(`cpio: ${e.content.origin} (for ${m.path}) yielded ${seen > h.filesize ? 'more' : seen} bytes, expected ${h.filesize}`);
    }
    const p = pad4(h.filesize);
    if (p) yield new Uint8Array(p);
  }
  yield encodeHeader({
    ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, filesize: 0,
    devmajor: 0, devminor: 0, rdevmajor: 0, rdevminor: 0, name: TRAILER,
  });
}

function padded(data: Uint8Array): Uint8Array {
  const p = pad4(data.length);
  if (!p) return data;
  const out = new Uint8Array(data.length + p);
  out.set(data);
  return out;
}

/** The whole archive in memory: fine for initramfs-sized trees. */
export async function writeCpio(tree: FileTree): Promise<Uint8Array> {
  return collectBytes(cpioChunks(tree));
}

export class CpioFormatError extends OssifyError {
  constructor(message: string) {
    super(`cpio: ${message}`);
    this.name = 'CpioFormatError';
  }
}

/** Parses a newc archive (up to the trailer) into its members, in archive order. */
export function readCpio(bytes: Uint8Array): CpioMember[] {
  const out: CpioMember[] = [];
  let off = 0;
  const ascii = new TextDecoder('latin1');
  for (;;) {
    if (off + HEADER_SIZE > bytes.length) throw new CpioFormatError(`truncated header at offset ${off}`);
    const head = ascii.decode(bytes.subarray(off, off + HEADER_SIZE));
    if (head.slice(0, 6) !== MAGIC) throw new CpioFormatError(`bad magic ${JSON.stringify(head.slice(0, 6))} at offset ${off}`);
    const f: number[] = [];
    for (let i = 0; i < 13; i++) {
      const s = head.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new CpioFormatError(`bad hex field ${JSON.stringify(s)} at offset ${off}`);
      f.push(parseInt(s, 16));
    }
    const [ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize] = f as [
      number, number, number, number, number, number, number, number, number, number, number, number,
    ];
    const nameStart = off + HEADER_SIZE;
    if (namesize < 1 || nameStart + namesize > bytes.length) throw new CpioFormatError(`bad name size at offset ${off}`);
    if (bytes[nameStart + namesize - 1] !== 0) throw new CpioFormatError(`name not NUL-terminated at offset ${off}`);
    const name = dec.decode(bytes.subarray(nameStart, nameStart + namesize - 1));
    const dataStart = nameStart + namesize + pad4(HEADER_SIZE + namesize);
    if (dataStart + filesize > bytes.length) throw new CpioFormatError(`truncated data of ${JSON.stringify(name)}`);
    const data = bytes.subarray(dataStart, dataStart + filesize);
    off = dataStart + filesize + pad4(filesize);
    if (name === TRAILER) return out;
    out.push({ ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, name, data });
  }
}

/** `S_IFMT` part of a mode, as the tree's type name. */
export function cpioType(mode: number): InodeEntry['type'] | undefined {
  const t = mode & S_IFMT;
  return (Object.keys(TYPE_BITS) as (keyof typeof TYPE_BITS)[]).find((k) => TYPE_BITS[k] === t);
}
