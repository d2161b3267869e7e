import { deflateRaw } from 'pako';
import type { BlockSink } from '../util/sink.ts';
import type { BlockSource } from './blocks.ts';

/**
 * qcow2 version 3 (QEMU's docs/interop/qcow2.txt), written in one pass over the disk's data
 * blocks: data clusters first, from cluster 1 on, in disk order; then the L2 tables, the L1
 * table, the refcount table and blocks; the header (cluster 0) last, once their places are
 * known. Clusters the source has no data for stay unallocated (L2 entry 0 reads as zeros).
 *
 * With `compression: 'zlib'` each data cluster is raw deflate with a 4 KiB window (what QEMU
 * inflates with), packed byte after byte as `qemu-img convert -c` packs them; a cluster that
 * does not shrink is stored whole. pako with zlib's hash writes the same bytes on every host.
 */

export const QCOW2_MAGIC = 0x514649fb;
const CLUSTER_BITS = 16;
const CS = 1 << CLUSTER_BITS;
const L2_ENTRIES = CS / 8;
/** refcount_order 4: 16-bit refcounts, QEMU's default. */
const REFCOUNTS_PER_BLOCK = CS / 2;
const OFLAG_COPIED = 1n << 63n;
const OFLAG_COMPRESSED = 1n << 62n;
/** Compressed descriptors: host offset in the low 62 - (cluster_bits - 8) bits, then the extra 512-byte sector count. */
const CSIZE_SHIFT = 62 - (CLUSTER_BITS - 8);
const HEADER_LENGTH = 104;

export interface Qcow2Options {
  compression?: 'none' | 'zlib';
  /** zlib level for compressed clusters (QEMU uses zlib's default, 6). */
  level?: 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Writes the image through `sink` (positioned writes); returns the file size. */
export async function writeQcow2(source: BlockSource, sink: BlockSink, opts: Qcow2Options = {}): Promise<number> {
  if (source.blockSize !== CS) throw new Error(`qcow2: the source must give ${CS}-byte blocks, not ${source.blockSize}`);
  const compress = opts.compression === 'zlib';
  const guestClusters = Math.ceil(source.size / CS);
  const l1Size = Math.ceil(guestClusters / L2_ENTRIES);
  const l2 = new Map<number, DataView>();
  const refcounts: number[] = [];
  const ref = (hostCluster: number) => {
    refcounts[hostCluster] = (refcounts[hostCluster] ?? 0) + 1;
  };
  ref(0);
  let host = CS;

  for await (const b of source.blocks()) {
    const guest = b.offset / CS;
    let entry: bigint;
    const packed = compress ? deflateRaw(b.data, { level: opts.level ?? 6, windowBits: 12, memLevel: 9, legacyHash: true } as Parameters<typeof deflateRaw>[1]) : undefined;
    // A compressed cluster must also fit the descriptor's sector count; one that does not shrink is stored as is.
    if (packed && packed.length < CS - 512) {
      const extra = Math.floor((host + packed.length - 1) / 512) - Math.floor(host / 512);
      entry = OFLAG_COMPRESSED | (BigInt(extra) << BigInt(CSIZE_SHIFT)) | BigInt(host);
      const first = Math.floor(host / 512) * 512;
      for (let c = Math.floor(first / CS); c <= Math.floor((first + (extra + 1) * 512 - 1) / CS); c++) ref(c);
      await sink.write(host, packed);
      host += packed.length;
    } else {
      host = alignUp(host, CS);
      entry = OFLAG_COPIED | BigInt(host);
      ref(host / CS);
      await sink.write(host, b.data);
      host += CS;
    }
    const l1Index = Math.floor(guest / L2_ENTRIES);
    let table = l2.get(l1Index);
    if (!table) l2.set(l1Index, (table = new DataView(new ArrayBuffer(CS))));
    table.setBigUint64((guest % L2_ENTRIES) * 8, entry);
  }

  // Metadata after the data, each table in whole clusters.
  host = alignUp(host, CS);
  const metaStart = host / CS;
  const l2Offsets = new Map<number, number>();
  for (const i of [...l2.keys()].sort((a, b) => a - b)) {
    l2Offsets.set(i, host);
    host += CS;
  }
  const l1Offset = host;
  host += alignUp(l1Size * 8, CS);
  // The refcount blocks count every cluster of the file, themselves and the table included.
  const before = host / CS;
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const total = before + tableClusters + blocks;
    const needBlocks = Math.ceil(total / REFCOUNTS_PER_BLOCK);
    const needTable = Math.ceil((needBlocks * 8) / CS);
    if (needBlocks === blocks && needTable === tableClusters) break;
    blocks = needBlocks;
    tableClusters = needTable;
  }
  const rtOffset = host;
  const rbOffset = rtOffset + tableClusters * CS;
  const totalClusters = before + tableClusters + blocks;
  for (let c = metaStart; c < totalClusters; c++) ref(c);

  for (const [i, table] of [...l2.entries()].sort(([a], [b]) => a - b)) await sink.write(l2Offsets.get(i)!, new Uint8Array(table.buffer));
  const l1 = new DataView(new ArrayBuffer(alignUp(l1Size * 8, CS)));
  for (const [i, off] of l2Offsets) l1.setBigUint64(i * 8, OFLAG_COPIED | BigInt(off));
  await sink.write(l1Offset, new Uint8Array(l1.buffer));
  const rt = new DataView(new ArrayBuffer(tableClusters * CS));
  for (let i = 0; i < blocks; i++) rt.setBigUint64(i * 8, BigInt(rbOffset + i * CS));
  await sink.write(rtOffset, new Uint8Array(rt.buffer));
  for (let i = 0; i < blocks; i++) {
    const rb = new DataView(new ArrayBuffer(CS));
    for (let j = 0; j < REFCOUNTS_PER_BLOCK; j++) {
      const n = refcounts[i * REFCOUNTS_PER_BLOCK + j];
      if (n) rb.setUint16(j * 2, n);
    }
    await sink.write(rbOffset + i * CS, new Uint8Array(rb.buffer));
  }

  const h = new DataView(new ArrayBuffer(CS));
  h.setUint32(0, QCOW2_MAGIC);
  h.setUint32(4, 3);
  h.setUint32(20, CLUSTER_BITS);
  h.setBigUint64(24, BigInt(source.size));
  h.setUint32(36, l1Size);
  h.setBigUint64(40, BigInt(l1Offset));
  h.setBigUint64(48, BigInt(rtOffset));
  h.setUint32(56, tableClusters);
  h.setUint32(96, 4);
  h.setUint32(100, HEADER_LENGTH);
  // Header extensions follow; a zero type (the rest of the cluster) ends them.
  await sink.write(0, new Uint8Array(h.buffer));
  return totalClusters * CS;
}
