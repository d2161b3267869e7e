import { open } from 'node:fs/promises';
import type { BlockSource, DataBlock } from '../formats/blocks.ts';
import { isZero } from '../formats/blocks.ts';
import { mergeExtents, type Extent } from '../util/extents.ts';

/**
 * The built raw disk as the output formats read it. `extents` are the byte ranges the build
 * wrote (the partition map's contents: GPT, ESP, root slot, site seed); everything outside
 * them is a hole and is never read. Inside them, blocks of zeros are still found and skipped.
 * Without `extents` the whole file is read.
 */
export interface DiskImage {
  path: string;
  size: number;
  /** sha256 of the whole disk: identifiers derived from the content (VHD UUID, VMDK CID) come from it. */
  sha256: string;
  extents?: readonly Extent[];
}

const READ = 4 << 20;

/** Block-aligned ranges to read: the extents widened to whole blocks and joined. */
function readRanges(img: DiskImage, blockSize: number): Extent[] {
  const end = Math.ceil(img.size / blockSize) * blockSize;
  const given = img.extents ?? [{ offset: 0, length: img.size }];
  return mergeExtents(
    given.map((e) => {
      const from = Math.floor(e.offset / blockSize) * blockSize;
      const to = Math.min(end, Math.ceil((e.offset + e.length) / blockSize) * blockSize);
      return { offset: from, length: Math.max(0, to - from) };
    }),
  );
}

export function diskBlocks(img: DiskImage, blockSize: number): BlockSource {
  const chunk = Math.max(blockSize, READ - (READ % blockSize));
  return {
    size: img.size,
    blockSize,
    async *blocks(): AsyncGenerator<DataBlock> {
      const fh = await open(img.path, 'r');
      try {
        const buf = new Uint8Array(chunk);
        for (const r of readRanges(img, blockSize)) {
          for (let pos = r.offset; pos < r.offset + r.length; pos += chunk) {
            const want = Math.min(chunk, r.offset + r.length - pos);
            let got = 0;
            while (got < want) {
              const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
              if (bytesRead === 0) break;
              got += bytesRead;
            }
            if (pos + got < Math.min(img.size, pos + want)) throw new Error(`${img.path} is shorter than ${img.size} bytes`);
            // The disk's last block, when it is not whole: zeros after the end.
            buf.fill(0, got, want);
            for (let o = 0; o < want; o += blockSize) {
              const data = buf.subarray(o, o + blockSize);
              if (!isZero(data)) yield { offset: pos + o, data };
            }
          }
        }
      } finally {
        await fh.close();
      }
    },
  };
}
