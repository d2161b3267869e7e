/**
 * A disk image as the image-format writers read it: its size and, in offset order, the
 * fixed-size blocks that hold any non-zero byte. Every block not given is zeros, so a writer
 * can leave it unallocated (qcow2, vmdk), a hole (vhd) or out of a sparse map (GNU tar).
 */
export interface DataBlock {
  /** Byte offset into the disk, a multiple of the block size. */
  offset: number;
  /** Exactly one block (the disk's last block zero-padded); valid until the next block is asked for. */
  data: Uint8Array;
}

export interface BlockSource {
  /** Virtual size in bytes. */
  size: number;
  blockSize: number;
  blocks(): AsyncIterable<DataBlock>;
}

/** Runs of consecutive data blocks, as `[offset, length)` ranges (a GNU sparse map, OVF's populated size). */
export function mergeRuns(runs: { offset: number; length: number }[], next: { offset: number; length: number }): void {
  const last = runs[runs.length - 1];
  if (last && last.offset + last.length === next.offset) last.length += next.length;
  else runs.push({ ...next });
}

const ZERO = new Uint8Array(1 << 20);

export function isZero(b: Uint8Array): boolean {
  for (let o = 0; o < b.length; o += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - o);
    if (Buffer.compare(b.subarray(o, o + n), ZERO.subarray(0, n)) !== 0) return false;
  }
  return true;
}
