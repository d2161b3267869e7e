import type { BlockSink } from './sink.ts';

/** A byte range of a file: `[offset, offset + length)`. */
export interface Extent {
  offset: number;
  length: number;
}

/** Sorted, with overlapping and touching ranges joined. */
export function mergeExtents(extents: readonly Extent[]): Extent[] {
  const sorted = extents.filter((e) => e.length > 0).map((e) => ({ ...e })).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) last.length = Math.max(last.length, e.offset + e.length - last.offset);
    else out.push(e);
  }
  return out;
}

/**
 * A sink that notes where it wrote: what the image-format writers need to know which parts
 * of a sparse disk can hold data, since Node cannot ask the filesystem (no SEEK_DATA).
 */
export function recordingSink(inner: BlockSink, written: Extent[], base = 0): BlockSink {
  return {
    async write(offset, data) {
      await inner.write(offset, data);
      const last = written[written.length - 1];
      const at = base + offset;
      // Writers mostly go front to back: extend the last range instead of growing the list.
      if (last && last.offset + last.length === at) last.length += data.length;
      else written.push({ offset: at, length: data.length });
    },
  };
}
