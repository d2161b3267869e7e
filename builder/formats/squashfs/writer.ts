import { open, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { isSyncReadable } from '../../tree/from-host.ts';
import type { FileTree } from '../../tree/tree.ts';
import { produceAtomic } from '../../util/atomic.ts';
import { InputError } from '../../util/errors.ts';
import { createCompressor, validateSpec, type CompressionName, type GzipEngine } from './compress.ts';
import { DEVBLK_SIZE, Flag, INVALID_TABLE, METADATA_SIZE, MAX_DIR_RUN, NO_XATTR, SUPERBLOCK_SIZE, METADATA_UNCOMPRESSED } from './constants.ts';
import { DataWriter } from './data.ts';
import { basicType, encodeDevice, encodeDir, encodeFile, encodeIpc, encodeSymlink, type DirIndexEntry } from './inode.ts';
import { MetadataWriter, Rec } from './metadata.ts';
import { ImageOutput, writeAll } from './output.ts';
import { planTree, type PNode } from './plan.ts';
import { inlineCompressor, workerPool, type BlockCompressor } from './pool.ts';
import { encodeSuperblock } from './superblock.ts';
import { IdTable, lookupTable } from './tables.ts';
import { XattrTable } from './xattr.ts';

export interface SquashfsOptions {
  compression: CompressionName;
  /** Compressor level; defaults as mksquashfs (gzip 9, zstd 15, xz 6). */
  level?: number;
  /** Data block size, a power of two from 4 KiB to 1 MiB; default 128 KiB. */
  blockSize?: number;
  /** Compression threads; default: available cores. Output does not depend on it. */
  threads?: number;
  /** Store every tail as a short block (mksquashfs -no-fragments). */
  noFragments?: boolean;
  /** Pack the tails of large files into fragments too (mksquashfs -always-use-fragments). */
  alwaysFragments?: boolean;
  /** Superblock time; default: the newest mtime in the tree (never the wall clock). */
  mkfsTime?: number;
  /** Write the NFS export table (mksquashfs does by default); default true. */
  exportable?: boolean;
  /** Which deflate writes gzip blocks (see GzipEngine); default portable. */
  gzipEngine?: GzipEngine;
}

export interface SquashfsResult {
  /** Size of the image file (padded to 4 KiB). */
  bytes: number;
  /** Bytes used by the filesystem proper (superblock `bytes_used`). */
  bytesUsed: number;
  inodes: number;
  files: number;
  fragments: number;
  dedupedFiles: number;
  dedupedBytes: number;
  ids: number;
  xattrSets: number;
  compression: CompressionName;
  level: number;
  /** What compressed the blocks, e.g. "pako (canonical zlib)" or "node:zlib zstd 1.5.7". */
  engine: string;
  blockSize: number;
  mkfsTime: number;
}

const enc = new TextEncoder();

export function resolveOptions(opts: SquashfsOptions): Required<SquashfsOptions> {
  const blockSize = opts.blockSize ?? 131072;
  if (!Number.isInteger(blockSize) || blockSize < 4096 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) {
    throw new InputError(`block size must be a power of two from 4096 to 1048576, got ${opts.blockSize}`);
  }
  const spec = validateSpec({ name: opts.compression, blockSize, ...(opts.level !== undefined ? { level: opts.level } : {}), ...(opts.gzipEngine ? { gzipEngine: opts.gzipEngine } : {}) });
  const threads = opts.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new InputError(`threads must be an integer from 1 to 256, got ${opts.threads}`);
  if (opts.noFragments && opts.alwaysFragments) throw new InputError('noFragments and alwaysFragments exclude each other');
  if (opts.mkfsTime !== undefined && (!Number.isInteger(opts.mkfsTime) || opts.mkfsTime < 0 || opts.mkfsTime > 0xffff_ffff)) {
    throw new InputError(`mkfsTime ${opts.mkfsTime} does not fit squashfs (0..4294967295)`);
  }
  return {
    compression: spec.name,
    level: spec.level,
    blockSize,
    threads,
    noFragments: !!opts.noFragments,
    alwaysFragments: !!opts.alwaysFragments,
    mkfsTime: opts.mkfsTime ?? -1,
    exportable: opts.exportable ?? true,
    gzipEngine: spec.gzipEngine,
  };
}

/**
 * Writes `tree` as a squashfs 4.0 image at `outPath` (via a temporary file renamed into
 * place). The image depends only on the tree and the options: not on the thread count,
 * the machine, or the clock.
 */
export async function writeSquashfs(tree: FileTree, outPath: string, opts: SquashfsOptions): Promise<SquashfsResult> {
  const o = resolveOptions(opts);
  const plan = planTree(tree);
  const spec = { name: o.compression, level: o.level, blockSize: o.blockSize, gzipEngine: o.gzipEngine };
  const comp = await createCompressor(spec);
  const mkfsTime = o.mkfsTime >= 0 ? o.mkfsTime : plan.maxMtime;

  return produceAtomic(outPath, async (tmp) => {
    const fh = await open(tmp, 'w');
    let pool: BlockCompressor | undefined;
    try {
      const metaComp = o.compression === 'none' ? null : comp;
      const headerLen = SUPERBLOCK_SIZE + (comp.options ? 2 + comp.options.length : 0);
      const out = new ImageOutput(fh, headerLen);
      // Threads pay off only with enough data; small images compress inline (same bytes).
      pool = o.threads > 1 && plan.dataBytes > 4 * o.blockSize ? await workerPool(spec, o.threads) : inlineCompressor(comp);
      const dw = new DataWriter(out, pool, {
        blockSize: o.blockSize,
        noFragments: o.noFragments,
        alwaysFragments: o.alwaysFragments,
        maxInFlight: Math.max(8, o.threads * 6),
      });
      const ahead = readAhead(plan.files, o.blockSize);
      for (let i = 0; i < plan.files.length; i++) {
        const f = plan.files[i]!;
        if (f.entry.type !== 'file') continue;
        f.data = await dw.writeFile(f.entry.content, `/${f.path}`, ahead(i));
      }
      await dw.finish();

      // Metadata: inode and directory tables are built together, children first.
      const ids = new IdTable();
      const xattrs = new XattrTable();
      const inodes = new MetadataWriter(metaComp);
      const dirs = new MetadataWriter(metaComp);
      writeInodes(plan.root, plan.inodeCount, inodes, dirs, ids, xattrs);

      let pos = out.position;
      const parts: Uint8Array[] = [];
      const put = (chunks: Uint8Array[], size: number) => {
        parts.push(...chunks);
        pos += size;
      };
      const inodeTable = pos;
      const it = inodes.finish();
      put(it.chunks, it.size);
      const dirTable = pos;
      const dt = dirs.finish();
      put(dt.chunks, dt.size);

      let fragTable = INVALID_TABLE;
      if (dw.fragments.length > 0) {
        const r = new Rec(16 * dw.fragments.length);
        for (const f of dw.fragments) r.u64(f.start).u32(f.size).u32(0);
        const t = lookupTable(r.done(), o.compression === 'none' ? null : comp, pos);
        fragTable = BigInt(t.listAt);
        put(t.bytes, t.size);
      }
      let exportTable = INVALID_TABLE;
      if (o.exportable) {
        const refs = new Array<number>(plan.inodeCount);
        const visit = (n: PNode) => {
          refs[n.ino - 1] = n.ref!;
          for (const c of n.children ?? []) if (c.node.entry.type === 'dir' || refs[c.node.ino - 1] === undefined) visit(c.node);
        };
        visit(plan.root);
        const r = new Rec(8 * refs.length);
        for (const ref of refs) r.u64(ref);
        const t = lookupTable(r.done(), metaComp, pos);
        exportTable = BigInt(t.listAt);
        put(t.bytes, t.size);
      }
      const idt = lookupTable(ids.encode(), metaComp, pos);
      const idTable = BigInt(idt.listAt);
      put(idt.bytes, idt.size);
      let xattrTable = INVALID_TABLE;
      if (xattrs.count > 0) {
        const x = xattrs.encode(metaComp, pos);
        xattrTable = BigInt(x.headerAt);
        put(x.bytes, x.size);
      }
      const bytesUsed = pos;
      const padded = Math.ceil(bytesUsed / DEVBLK_SIZE) * DEVBLK_SIZE;
      parts.push(new Uint8Array(padded - bytesUsed));
      for (const p of parts) await out.write(p);
      await out.flush();

      let flags = Flag.Duplicates;
      if (o.exportable) flags |= Flag.Exportable;
      if (xattrs.count === 0) flags |= Flag.NoXattrs;
      if (o.noFragments) flags |= Flag.NoFragments;
      if (o.alwaysFragments) flags |= Flag.AlwaysFragments;
      if (comp.options) flags |= Flag.CompressorOptions;
      if (o.compression === 'none') {
        flags |= Flag.InodesUncompressed | Flag.DataUncompressed | Flag.FragmentsUncompressed | Flag.XattrsUncompressed | Flag.IdsUncompressed;
      }
      const sb = encodeSuperblock({
        inodeCount: plan.inodeCount,
        mkfsTime,
        blockSize: o.blockSize,
        fragmentCount: dw.fragments.length,
        compressor: comp.id,
        flags,
        idCount: ids.ids.length,
        rootInode: BigInt(plan.root.ref!),
        bytesUsed: BigInt(bytesUsed),
        idTable,
        xattrTable,
        inodeTable: BigInt(inodeTable),
        directoryTable: BigInt(dirTable),
        fragmentTable: fragTable,
        exportTable,
      });
      await writeAll(fh, sb, 0);
      if (comp.options) {
        const hdr = new Rec(2 + comp.options.length).u16(comp.options.length | METADATA_UNCOMPRESSED).bytes(comp.options).done();
        await writeAll(fh, hdr, SUPERBLOCK_SIZE);
      }
      // A duplicate found at the very end may have left bytes past the image.
      await fh.truncate(padded);
      return {
        bytes: padded,
        bytesUsed,
        inodes: plan.inodeCount,
        files: plan.files.length,
        fragments: dw.fragments.length,
        dedupedFiles: dw.dedupedFiles,
        dedupedBytes: dw.dedupedBytes,
        ids: ids.ids.length,
        xattrSets: xattrs.count,
        compression: o.compression,
        level: o.level,
        engine: comp.engine,
        blockSize: o.blockSize,
        mkfsTime,
      };
    } finally {
      await pool?.close();
      await closeQuietly(fh);
    }
  });
}

/**
 * Read-ahead of small files: while file i is packed, the next few dozen small files are
 * already being read (bounded in count and bytes), so per-file open/read/close latency is
 * hidden. Files of a block or more stream through the writer instead.
 */
function readAhead(files: PNode[], blockSize: number): (i: number) => Promise<Uint8Array> | undefined {
  const MAX_FILES = 64;
  const MAX_BYTES = 16 << 20;
  const pending = new Map<number, Promise<Uint8Array>>();
  let next = 0;
  let bytes = 0;
  const small = (i: number) => {
    const e = files[i]!.entry;
    // Contents read synchronously are cheaper read when needed than ahead.
    return e.type === 'file' && e.content.size > 0 && e.content.size < blockSize && !isSyncReadable(e.content) ? e.content : undefined;
  };
  return (i) => {
    if (next <= i) next = i;
    while (next < files.length && next - i < MAX_FILES && bytes < MAX_BYTES) {
      const c = small(next);
      if (c) {
        const p = DataWriter.readAll(c, `/${files[next]!.path}`);
        p.catch(() => {}); // surfaces when taken
        pending.set(next, p);
        bytes += c.size;
      }
      next++;
    }
    const p = pending.get(i);
    if (p) {
      pending.delete(i);
      bytes -= small(i)!.size;
    }
    return p;
  };
}

async function closeQuietly(fh: FileHandle): Promise<void> {
  try {
    await fh.close();
  } catch {
    // already closed or failed; the original error matters more
  }
}

/** Appends an inode and records where it went. */
function place(inodes: MetadataWriter, node: PNode, bytes: Uint8Array, type: number): void {
  const p = inodes.position;
  node.ref = p.block * 0x10000 + p.offset;
  node.type = type;
  inodes.append(bytes);
}

function writeInodes(root: PNode, inodeCount: number, inodes: MetadataWriter, dirs: MetadataWriter, ids: IdTable, xattrs: XattrTable): void {
  const writeLeaf = (n: PNode) => {
    const e = n.entry;
    const h = { mode: e.mode, uidIdx: ids.get(e.uid), gidIdx: ids.get(e.gid), mtime: e.mtime, ino: n.ino };
    const xa = xattrs.add(e.xattrs, `/${n.path}`);
    const xOrNull = xa === NO_XATTR ? null : xa;
    let bytes: Uint8Array;
    switch (e.type) {
      case 'file': {
        const d = n.data!;
        const extended = xa !== NO_XATTR || n.nlink > 1 || d.size > 0xffff_ffff || d.start > 0xffff_ffff || d.sparse > 0;
        bytes = encodeFile(h, { ...d, nlink: n.nlink, xattr: xa }, extended);
        break;
      }
      case 'symlink':
        bytes = encodeSymlink(h, n.nlink, enc.encode(e.target), xOrNull);
        break;
      case 'char':
      case 'block':
        bytes = encodeDevice(h, e.type, n.nlink, e.major, e.minor, xOrNull);
        break;
      case 'fifo':
      case 'socket':
        bytes = encodeIpc(h, e.type, n.nlink, xOrNull);
        break;
      default:
        throw new Error(`unexpected ${e.type}`);
    }
    place(inodes, n, bytes, new DataView(bytes.buffer, bytes.byteOffset).getUint16(0, true));
  };

  const writeDir = (dir: PNode) => {
    for (const { node } of dir.children!) {
      if (node.entry.type === 'dir') writeDir(node);
      else if (node.ref === undefined) writeLeaf(node);
    }
    const listing = writeListing(dir, dirs);
    const e = dir.entry;
    const h = { mode: e.mode, uidIdx: ids.get(e.uid), gidIdx: ids.get(e.gid), mtime: e.mtime, ino: dir.ino };
    const xa = xattrs.add(e.xattrs, `/${dir.path}`);
    const parent = dir.parent ? dir.parent.ino : inodeCount + 1;
    const extended = xa !== NO_XATTR || listing.index.length > 0 || listing.size + 3 > 0xffff;
    const bytes = encodeDir(h, { ...listing, listingSize: listing.size, nlink: dir.nlink, parent, xattr: xa }, extended);
    place(inodes, dir, bytes, extended ? 8 : 1);
  };
  writeDir(root);
}

/**
 * Writes a directory's entries as runs behind headers. A new run starts when the header
 * cannot describe the next entry (other inode block, inode number too far, 256 entries) or
 * when the listing crosses into a new metadata block; the latter runs are indexed so the
 * kernel can jump close to a name in a large directory.
 */
function writeListing(dir: PNode, dirs: MetadataWriter): { startBlock: number; offset: number; size: number; index: DirIndexEntry[] } {
  const start = dirs.position;
  const base = dirs.uncompressedLength;
  const index: DirIndexEntry[] = [];
  const kids = dir.children!;
  let prevMeta = Math.floor(base / METADATA_SIZE);
  let i = 0;
  while (i < kids.length) {
    const first = kids[i]!.node;
    const hdrBlock = Math.floor(first.ref! / 0x10000);
    const hdrPos = dirs.uncompressedLength;
    const hdrMeta = Math.floor(hdrPos / METADATA_SIZE);
    // Decide the run length first: the header carries the count.
    let n = 0;
    let p = hdrPos + 12;
    while (i + n < kids.length && n < MAX_DIR_RUN) {
      const k = kids[i + n]!;
      const block = Math.floor(k.node.ref! / 0x10000);
      const diff = k.node.ino - first.ino;
      if (block !== hdrBlock || diff < -32768 || diff > 32767) break;
      if (n > 0 && Math.floor(p / METADATA_SIZE) !== hdrMeta) break;
      n++;
      p += 8 + k.name.length;
    }
    if (hdrMeta !== prevMeta) {
      index.push({ index: hdrPos - base, start: dirs.position.block, name: kids[i]!.name });
      prevMeta = hdrMeta;
    }
    const r = new Rec(12 + n * 24).u32(n - 1).u32(hdrBlock).i32(first.ino);
    for (let j = 0; j < n; j++) {
      const k = kids[i + j]!;
      r.u16(k.node.ref! % 0x10000).i16(k.node.ino - first.ino).u16(basicType(k.node.type!)).u16(k.name.length - 1).bytes(k.name);
    }
    dirs.append(r.done());
    i += n;
  }
  return { startBlock: start.block, offset: start.offset, size: dirs.uncompressedLength - base, index };
}
