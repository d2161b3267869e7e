import { open, type FileHandle } from 'node:fs/promises';
import { OssifyError } from '../../util/errors.ts';
import { createCompressor, type CompressionName, type Compressor } from './compress.ts';
import { CompressorId, DATA_UNCOMPRESSED, INVALID_TABLE, METADATA_SIZE, METADATA_UNCOMPRESSED, NO_FRAGMENT, NO_XATTR, SUPERBLOCK_SIZE, XATTR_PREFIXES, XATTR_VALUE_OOL } from './constants.ts';
import { decodeDev, basicType } from './inode.ts';
import { decodeSuperblock, type Superblock } from './superblock.ts';

export type InodeKind = 'dir' | 'file' | 'symlink' | 'block' | 'char' | 'fifo' | 'socket';
const KINDS: InodeKind[] = ['dir', 'file', 'symlink', 'block', 'char', 'fifo', 'socket'];

export interface Inode {
  kind: InodeKind;
  /** On-disk type code (1..14); > 7 means the extended form. */
  type: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  ino: number;
  nlink: number;
  xattrIndex: number;
  // dir
  dirStart?: number;
  dirOffset?: number;
  dirSize?: number;
  parent?: number;
  indexCount?: number;
  // file
  size?: number;
  blocksStart?: number;
  blocks?: number[];
  fragIndex?: number;
  fragOffset?: number;
  sparse?: number;
  // symlink
  target?: string;
  // devices
  major?: number;
  minor?: number;
}

export interface DirEntry {
  name: string;
  ref: number;
  ino: number;
  type: number;
}

const COMP_NAMES: Partial<Record<number, CompressionName>> = { [CompressorId.Gzip]: 'gzip', [CompressorId.Zstd]: 'zstd', [CompressorId.Xz]: 'xz' };
const dec = new TextDecoder('utf-8', { fatal: false });

/**
 * A squashfs 4.0 reader for tests and `ossify inspect`: superblock, inodes, directories,
 * xattrs and file data, straight from the image with positioned reads.
 */
export class SquashfsReader {
  private readonly metaCache = new Map<number, { data: Uint8Array; next: number }>();
  private ids: number[] = [];
  private fragTable: { start: number; size: number }[] = [];
  private xattrIds: { ref: number; count: number; size: number }[] = [];
  private xattrKvStart = 0;

  private constructor(
    private readonly fh: FileHandle,
    readonly sb: Superblock,
    private readonly comp: Compressor,
    readonly compression: CompressionName,
    readonly fileSize: number,
  ) {}

  static async open(path: string): Promise<SquashfsReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new OssifyError(`cannot open ${path}: ${(err as Error).message}`, { exitCode: 2, cause: err });
    }
    try {
      const head = Buffer.alloc(SUPERBLOCK_SIZE);
      const { bytesRead } = await fh.read(head, 0, SUPERBLOCK_SIZE, 0);
      const sb = decodeSuperblock(head.subarray(0, bytesRead));
      const name = COMP_NAMES[sb.compressor];
      if (sb.compressor === CompressorId.Lz4) throw new OssifyError(`${path}: lz4 is not supported`);
      if (!name) throw new OssifyError(`${path}: compressor id ${sb.compressor} is not supported by this reader`);
      const comp = await createCompressor({ name, blockSize: sb.blockSize });
      const st = await fh.stat();
      if (BigInt(st.size) < sb.bytesUsed) throw new OssifyError(`${path}: truncated image (${st.size} bytes, superblock says ${sb.bytesUsed})`);
      const r = new SquashfsReader(fh, sb, comp, name, st.size);
      await r.loadTables();
      return r;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private async readAt(pos: number, len: number): Promise<Uint8Array> {
    const b = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.fh.read(b, done, len - done, pos + done);
      if (bytesRead === 0) throw new OssifyError(`unexpected end of image at ${pos + done}`);
      done += bytesRead;
    }
    return b;
  }

  /** One metadata block at absolute `pos`: its bytes and where the next one starts. */
  private async metaBlock(pos: number): Promise<{ data: Uint8Array; next: number }> {
    const hit = this.metaCache.get(pos);
    if (hit) return hit;
    const hdr = await this.readAt(pos, 2);
    const h = hdr[0]! | (hdr[1]! << 8);
    const len = h & ~METADATA_UNCOMPRESSED;
    if (len === 0 || len > METADATA_SIZE) throw new OssifyError(`corrupt metadata block header at ${pos}`);
    const raw = await this.readAt(pos + 2, len);
    const data = h & METADATA_UNCOMPRESSED ? raw : this.comp.decompress(raw, METADATA_SIZE);
    const out = { data, next: pos + 2 + len };
    this.metaCache.set(pos, out);
    return out;
  }

  /** Reads `len` bytes of a metadata stream starting at block `pos`, byte `offset`. */
  async readMeta(pos: number, offset: number, len: number): Promise<{ bytes: Uint8Array; pos: number; offset: number }> {
    const out = new Uint8Array(len);
    let got = 0;
    while (got < len) {
      const b = await this.metaBlock(pos);
      if (offset >= b.data.length) {
        pos = b.next;
        offset -= b.data.length;
        continue;
      }
      const n = Math.min(len - got, b.data.length - offset);
      out.set(b.data.subarray(offset, offset + n), got);
      got += n;
      offset += n;
      if (offset === b.data.length) {
        pos = b.next;
        offset = 0;
      }
    }
    return { bytes: out, pos, offset };
  }

  /** A lookup table: records in metadata blocks listed by an uncompressed array of offsets. */
  private async lookupTable(listAt: bigint, count: number, recSize: number): Promise<Uint8Array> {
    if (count === 0) return new Uint8Array(0);
    const total = count * recSize;
    const nBlocks = Math.ceil(total / METADATA_SIZE);
    const list = await this.readAt(Number(listAt), 8 * nBlocks);
    const dv = new DataView(list.buffer, list.byteOffset);
    const out = new Uint8Array(total);
    for (let i = 0; i < nBlocks; i++) {
      const at = Number(dv.getBigUint64(8 * i, true));
      const len = Math.min(METADATA_SIZE, total - i * METADATA_SIZE);
      const { bytes } = await this.readMeta(at, 0, len);
      out.set(bytes, i * METADATA_SIZE);
    }
    return out;
  }

  private async loadTables(): Promise<void> {
    const sb = this.sb;
    const idb = await this.lookupTable(sb.idTable, sb.idCount, 4);
    const idv = new DataView(idb.buffer);
    this.ids = Array.from({ length: sb.idCount }, (_, i) => idv.getUint32(4 * i, true));
    if (sb.fragmentTable !== INVALID_TABLE && sb.fragmentCount > 0) {
      const fb = await this.lookupTable(sb.fragmentTable, sb.fragmentCount, 16);
      const fv = new DataView(fb.buffer);
      this.fragTable = Array.from({ length: sb.fragmentCount }, (_, i) => ({ start: Number(fv.getBigUint64(16 * i, true)), size: fv.getUint32(16 * i + 8, true) }));
    }
    if (sb.xattrTable !== INVALID_TABLE) {
      const h = await this.readAt(Number(sb.xattrTable), 16);
      const hv = new DataView(h.buffer);
      this.xattrKvStart = Number(hv.getBigUint64(0, true));
      const count = hv.getUint32(8, true);
      const xb = await this.lookupTable(sb.xattrTable + 16n, count, 16);
      const xv = new DataView(xb.buffer);
      this.xattrIds = Array.from({ length: count }, (_, i) => ({
        ref: Number(xv.getBigUint64(16 * i, true)),
        count: xv.getUint32(16 * i + 8, true),
        size: xv.getUint32(16 * i + 12, true),
      }));
    }
  }

  get rootRef(): number {
    return Number(this.sb.rootInode);
  }

  get idTable(): readonly number[] {
    return this.ids;
  }

  get fragmentTable(): readonly { start: number; size: number }[] {
    return this.fragTable;
  }

  async inode(ref: number): Promise<Inode> {
    let pos = Number(this.sb.inodeTable) + Math.floor(ref / 0x10000);
    let offset = ref % 0x10000;
    const take = async (n: number) => {
      const r = await this.readMeta(pos, offset, n);
      pos = r.pos;
      offset = r.offset;
      return new DataView(r.bytes.buffer);
    };
    const h = await take(16);
    const type = h.getUint16(0, true);
    if (type < 1 || type > 14) throw new OssifyError(`corrupt inode at ref ${ref}: type ${type}`);
    const uidIdx = h.getUint16(4, true);
    const gidIdx = h.getUint16(6, true);
    const ino: Inode = {
      kind: KINDS[basicType(type) - 1]!,
      type,
      mode: h.getUint16(2, true),
      uid: this.ids[uidIdx] ?? -1,
      gid: this.ids[gidIdx] ?? -1,
      mtime: h.getUint32(8, true),
      ino: h.getUint32(12, true),
      nlink: 1,
      xattrIndex: NO_XATTR,
    };
    switch (type) {
      case 1: {
        const d = await take(16);
        ino.dirStart = d.getUint32(0, true);
        ino.nlink = d.getUint32(4, true);
        ino.dirSize = d.getUint16(8, true);
        ino.dirOffset = d.getUint16(10, true);
        ino.parent = d.getUint32(12, true);
        break;
      }
      case 8: {
        const d = await take(24);
        ino.nlink = d.getUint32(0, true);
        ino.dirSize = d.getUint32(4, true);
        ino.dirStart = d.getUint32(8, true);
        ino.parent = d.getUint32(12, true);
        ino.indexCount = d.getUint16(16, true);
        ino.dirOffset = d.getUint16(18, true);
        ino.xattrIndex = d.getUint32(20, true);
        break;
      }
      case 2:
      case 9: {
        let size: number;
        if (type === 2) {
          const d = await take(16);
          ino.blocksStart = d.getUint32(0, true);
          ino.fragIndex = d.getUint32(4, true);
          ino.fragOffset = d.getUint32(8, true);
          size = d.getUint32(12, true);
          ino.sparse = 0;
        } else {
          const d = await take(40);
          ino.blocksStart = Number(d.getBigUint64(0, true));
          size = Number(d.getBigUint64(8, true));
          ino.sparse = Number(d.getBigUint64(16, true));
          ino.nlink = d.getUint32(24, true);
          ino.fragIndex = d.getUint32(28, true);
          ino.fragOffset = d.getUint32(32, true);
          ino.xattrIndex = d.getUint32(36, true);
        }
        ino.size = size;
        const bs = this.sb.blockSize;
        const n = ino.fragIndex === NO_FRAGMENT ? Math.ceil(size / bs) : Math.floor(size / bs);
        const b = n > 0 ? await take(4 * n) : new DataView(new ArrayBuffer(0));
        ino.blocks = Array.from({ length: n }, (_, i) => b.getUint32(4 * i, true));
        break;
      }
      case 3:
      case 10: {
        const d = await take(8);
        ino.nlink = d.getUint32(0, true);
        const len = d.getUint32(4, true);
        const t = await take(len);
        ino.target = dec.decode(new Uint8Array(t.buffer));
        if (type === 10) ino.xattrIndex = (await take(4)).getUint32(0, true);
        break;
      }
      case 4:
      case 5:
      case 11:
      case 12: {
        const d = await take(type > 7 ? 12 : 8);
        ino.nlink = d.getUint32(0, true);
        Object.assign(ino, decodeDev(d.getUint32(4, true)));
        if (type > 7) ino.xattrIndex = d.getUint32(8, true);
        break;
      }
      default: {
        const d = await take(type > 7 ? 8 : 4);
        ino.nlink = d.getUint32(0, true);
        if (type > 7) ino.xattrIndex = d.getUint32(4, true);
      }
    }
    return ino;
  }

  async readDir(dir: Inode): Promise<DirEntry[]> {
    if (dir.kind !== 'dir') throw new OssifyError('not a directory');
    const size = dir.dirSize! - 3;
    if (size <= 0) return [];
    const { bytes } = await this.readMeta(Number(this.sb.directoryTable) + dir.dirStart!, dir.dirOffset!, size);
    const dv = new DataView(bytes.buffer);
    const out: DirEntry[] = [];
    let p = 0;
    while (p < size) {
      const count = dv.getUint32(p, true) + 1;
      const start = dv.getUint32(p + 4, true);
      const base = dv.getInt32(p + 8, true);
      p += 12;
      for (let i = 0; i < count; i++) {
        const off = dv.getUint16(p, true);
        const delta = dv.getInt16(p + 2, true);
        const type = dv.getUint16(p + 4, true);
        const nlen = dv.getUint16(p + 6, true) + 1;
        const name = dec.decode(bytes.subarray(p + 8, p + 8 + nlen));
        p += 8 + nlen;
        out.push({ name, ref: start * 0x10000 + off, ino: base + delta, type });
      }
    }
    return out;
  }

  /** A file's contents, block by block (holes come back as zeros). */
  async *readFile(file: Inode): AsyncGenerator<Uint8Array> {
    if (file.kind !== 'file') throw new OssifyError('not a regular file');
    const bs = this.sb.blockSize;
    let pos = file.blocksStart!;
    let left = file.size!;
    for (const b of file.blocks!) {
      const want = Math.min(bs, left);
      const onDisk = b & ~DATA_UNCOMPRESSED;
      if (onDisk === 0) {
        yield new Uint8Array(want);
      } else {
        const raw = await this.readAt(pos, onDisk);
        const data = b & DATA_UNCOMPRESSED ? raw : this.comp.decompress(raw, bs);
        if (data.length !== want) throw new OssifyError(`corrupt data block at ${pos}: ${data.length} bytes, expected ${want}`);
        yield data;
      }
      pos += onDisk;
      left -= want;
    }
    if (left > 0) {
      if (file.fragIndex === NO_FRAGMENT) throw new OssifyError('file is shorter than its size');
      const frag = this.fragTable[file.fragIndex!];
      if (!frag) throw new OssifyError(`fragment index ${file.fragIndex} out of range`);
      const onDisk = frag.size & ~DATA_UNCOMPRESSED;
      const raw = await this.readAt(frag.start, onDisk);
      const data = frag.size & DATA_UNCOMPRESSED ? raw : this.comp.decompress(raw, bs);
      yield data.slice(file.fragOffset!, file.fragOffset! + left);
    }
  }

  async readFileAll(file: Inode): Promise<Uint8Array> {
    const out = new Uint8Array(file.size!);
    let o = 0;
    for await (const c of this.readFile(file)) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  async xattrs(inode: Inode): Promise<Record<string, Uint8Array>> {
    if (inode.xattrIndex === NO_XATTR) return {};
    const id = this.xattrIds[inode.xattrIndex];
    if (!id) throw new OssifyError(`xattr index ${inode.xattrIndex} out of range`);
    let pos = this.xattrKvStart + Math.floor(id.ref / 0x10000);
    let offset = id.ref % 0x10000;
    const take = async (n: number) => {
      const r = await this.readMeta(pos, offset, n);
      pos = r.pos;
      offset = r.offset;
      return r.bytes;
    };
    const out: Record<string, Uint8Array> = {};
    for (let i = 0; i < id.count; i++) {
      const kh = new DataView((await take(4)).buffer);
      const t = kh.getUint16(0, true);
      const name = dec.decode(await take(kh.getUint16(2, true)));
      const prefix = XATTR_PREFIXES[t & 0xff];
      if (prefix === undefined) throw new OssifyError(`unknown xattr prefix id ${t & 0xff}`);
      const vlen = new DataView((await take(4)).buffer).getUint32(0, true);
      let value = await take(vlen);
      if (t & XATTR_VALUE_OOL) {
        const ref = Number(new DataView(value.buffer).getBigUint64(0, true));
        const at = this.xattrKvStart + Math.floor(ref / 0x10000);
        const r1 = await this.readMeta(at, ref % 0x10000, 4);
        const len = new DataView(r1.bytes.buffer).getUint32(0, true);
        value = (await this.readMeta(r1.pos, r1.offset, len)).bytes;
      }
      out[prefix + name] = value;
    }
    return out;
  }

  /** Every entry, parents first, in on-disk (byte) order. */
  async *walk(): AsyncGenerator<{ path: string; inode: Inode; ref: number }> {
    const root = await this.inode(this.rootRef);
    yield { path: '', inode: root, ref: this.rootRef };
    const visit = async function* (this: SquashfsReader, dirPath: string, dir: Inode): AsyncGenerator<{ path: string; inode: Inode; ref: number }> {
      for (const e of await this.readDir(dir)) {
        const p = dirPath === '' ? e.name : `${dirPath}/${e.name}`;
        const ino = await this.inode(e.ref);
        yield { path: p, inode: ino, ref: e.ref };
        if (ino.kind === 'dir') yield* visit.call(this, p, ino);
      }
    };
    yield* visit.call(this, '', root);
  }
}

const MODE_CHARS: Record<InodeKind, string> = { dir: 'd', file: '-', symlink: 'l', block: 'b', char: 'c', fifo: 'p', socket: 's' };

/** `drwxr-xr-x`-style mode string, setuid/setgid/sticky included. */
export function modeString(kind: InodeKind, mode: number): string {
  const s = [MODE_CHARS[kind]];
  const rwx = (bits: number, special: boolean, ch: string) => {
    s.push(bits & 4 ? 'r' : '-', bits & 2 ? 'w' : '-');
    s.push(special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  };
  rwx((mode >> 6) & 7, !!(mode & 0o4000), 's');
  rwx((mode >> 3) & 7, !!(mode & 0o2000), 's');
  rwx(mode & 7, !!(mode & 0o1000), 't');
  return s.join('');
}

/**
 * One line as `unsquashfs -lln` prints it (times in UTC so output is host-independent),
 * including its column arithmetic: owner and size share 25 columns.
 */
export function listingLine(path: string, ino: Inode): string {
  const owner = `${ino.uid}/${ino.gid}`;
  const width = 25 - (owner.length - 1);
  const d = new Date(ino.mtime * 1000).toISOString();
  const when = `${d.slice(0, 10)} ${d.slice(11, 16)}`;
  let size: string;
  if (ino.kind === 'char' || ino.kind === 'block') {
    size = ' '.padStart(Math.max(width - 7, 0)) + `${String(ino.major).padStart(3)},${String(ino.minor).padStart(3)}`;
  } else {
    const n = ino.kind === 'file' ? ino.size! : ino.kind === 'dir' ? ino.dirSize! : ino.kind === 'symlink' ? Buffer.byteLength(ino.target!) : 0;
    size = String(n).padStart(Math.max(width, 0));
  }
  const name = `squashfs-root${path === '' ? '' : `/${path}`}`;
  return `${modeString(ino.kind, ino.mode)} ${owner} ${size} ${when} ${name}${ino.kind === 'symlink' ? ` -> ${ino.target}` : ''}`;
}

export { INVALID_TABLE };
