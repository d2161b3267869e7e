import type { Compressor } from './compress.ts';
import { MetadataWriter, Rec } from './metadata.ts';

/**
 * A lookup table (ids, fragments, export): fixed-size records in metadata blocks, followed
 * by the uncompressed list of those blocks' absolute offsets. Returns the bytes to append
 * at `at` and the offset of the location list (what the superblock points to).
 */
export function lookupTable(records: Uint8Array, comp: Compressor | null, at: number): { bytes: Uint8Array[]; size: number; listAt: number } {
  const mw = new MetadataWriter(comp);
  mw.append(records);
  const { chunks, size } = mw.finish();
  const list = new Rec(8 * mw.blockStarts.length);
  for (const s of mw.blockStarts) list.u64(at + s);
  const l = list.done();
  return { bytes: [...chunks, l], size: size + l.length, listAt: at + size };
}

/** uid/gid values in first-use order; inodes store 16-bit indexes into it. */
export class IdTable {
  private readonly index = new Map<number, number>();
  readonly ids: number[] = [];
  get(id: number): number {
    let i = this.index.get(id);
    if (i === undefined) {
      i = this.ids.length;
      if (i >= 0x10000) throw new RangeError('more than 65536 distinct uids/gids');
      this.ids.push(id);
      this.index.set(id, i);
    }
    return i;
  }
  encode(): Uint8Array {
    const r = new Rec(4 * this.ids.length);
    for (const id of this.ids) r.u32(id);
    return r.done();
  }
}
