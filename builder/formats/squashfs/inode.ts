import { InodeType } from './constants.ts';
import { Rec } from './metadata.ts';

/** Fields every inode starts with. */
export interface InodeHeader {
  type: InodeType;
  mode: number;
  uidIdx: number;
  gidIdx: number;
  mtime: number;
  ino: number;
}

function header(r: Rec, h: InodeHeader): Rec {
  return r.u16(h.type).u16(h.mode & 0o7777).u16(h.uidIdx).u16(h.gidIdx).u32(h.mtime).u32(h.ino);
}

export interface DirIndexEntry {
  /** Bytes from the listing's first header to this header. */
  index: number;
  /** Directory-table offset of the metadata block holding this header. */
  start: number;
  name: Uint8Array;
}

export function encodeDir(
  h: Omit<InodeHeader, 'type'>,
  d: { startBlock: number; offset: number; listingSize: number; nlink: number; parent: number; xattr: number; index: DirIndexEntry[] },
  extended: boolean,
): Uint8Array {
  // The kernel synthesises "." and "..", so the recorded size is 3 bytes larger than the listing.
  const fileSize = d.listingSize + 3;
  if (!extended) {
    return header(new Rec(32), { ...h, type: InodeType.Dir })
      .u32(d.startBlock)
      .u32(d.nlink)
      .u16(fileSize)
      .u16(d.offset)
      .u32(d.parent)
      .done();
  }
  const r = header(new Rec(40), { ...h, type: InodeType.LDir })
    .u32(d.nlink)
    .u32(fileSize)
    .u32(d.startBlock)
    .u32(d.parent)
    .u16(d.index.length)
    .u16(d.offset)
    .u32(d.xattr);
  for (const e of d.index) r.u32(e.index).u32(e.start).u32(e.name.length - 1).bytes(e.name);
  return r.done();
}

export function encodeFile(
  h: Omit<InodeHeader, 'type'>,
  f: { start: number; size: number; sparse: number; nlink: number; fragIndex: number; fragOffset: number; xattr: number; blocks: number[] },
  extended: boolean,
): Uint8Array {
  const r = new Rec(56 + 4 * f.blocks.length);
  if (!extended) {
    header(r, { ...h, type: InodeType.File }).u32(f.start).u32(f.fragIndex).u32(f.fragOffset).u32(f.size);
  } else {
    header(r, { ...h, type: InodeType.LFile })
      .u64(f.start)
      .u64(f.size)
      .u64(f.sparse)
      .u32(f.nlink)
      .u32(f.fragIndex)
      .u32(f.fragOffset)
      .u32(f.xattr);
  }
  for (const b of f.blocks) r.u32(b);
  return r.done();
}

export function encodeSymlink(h: Omit<InodeHeader, 'type'>, nlink: number, target: Uint8Array, xattr: number | null): Uint8Array {
  const r = header(new Rec(32 + target.length), { ...h, type: xattr === null ? InodeType.Symlink : InodeType.LSymlink })
    .u32(nlink)
    .u32(target.length)
    .bytes(target);
  if (xattr !== null) r.u32(xattr);
  return r.done();
}

/** Linux's encoding of a device number as squashfs stores it (new_encode_dev). */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function decodeDev(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

export function encodeDevice(h: Omit<InodeHeader, 'type'>, kind: 'char' | 'block', nlink: number, major: number, minor: number, xattr: number | null): Uint8Array {
  const basic = kind === 'char' ? InodeType.Char : InodeType.Block;
  const r = header(new Rec(32), { ...h, type: xattr === null ? basic : basic + 7 }).u32(nlink).u32(encodeDev(major, minor));
  if (xattr !== null) r.u32(xattr);
  return r.done();
}

export function encodeIpc(h: Omit<InodeHeader, 'type'>, kind: 'fifo' | 'socket', nlink: number, xattr: number | null): Uint8Array {
  const basic = kind === 'fifo' ? InodeType.Fifo : InodeType.Socket;
  const r = header(new Rec(28), { ...h, type: xattr === null ? basic : basic + 7 }).u32(nlink);
  if (xattr !== null) r.u32(xattr);
  return r.done();
}

/** The basic type a directory entry records for an inode of any flavour. */
export function basicType(t: InodeType): InodeType {
  return t > 7 ? t - 7 : t;
}
