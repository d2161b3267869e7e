import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileHandleSink, type BlockSink } from '../util/sink.ts';
import type { FileDigest } from './types.ts';

/** A stream of chunks into a new file; its digest is taken on the way, so the file is not read back. */
export async function writeChunks(dest: string, chunks: AsyncIterable<Uint8Array>): Promise<FileDigest> {
  const h = createHash('sha256');
  let size = 0;
  async function* hashed() {
    for await (const c of chunks) {
      h.update(c);
      size += c.length;
      yield c;
    }
  }
  await pipeline(Readable.from(hashed()), createWriteStream(dest, { flags: 'w', highWaterMark: 4 << 20 }));
  return { sha256: h.digest('hex'), size };
}

const ZERO = new Uint8Array(1 << 20);

/**
 * A new file for a writer that places its bytes, holes staying holes; `write` returns the
 * file's length. When the writer went front to back (a VHD), the digest is taken on the way,
 * the holes hashed as zeros from memory; otherwise (a qcow2 writes its header last) the
 * caller reads the file back.
 */
export async function writePositioned(dest: string, write: (sink: BlockSink) => Promise<number>): Promise<FileDigest | undefined> {
  const h = createHash('sha256');
  let pos = 0;
  let inOrder = true;
  const zeros = (n: number) => {
    for (; n > 0; n -= ZERO.length) h.update(ZERO.subarray(0, Math.min(n, ZERO.length)));
  };
  const fh = await open(dest, 'w');
  try {
    const inner = fileHandleSink(fh);
    const size = await write({
      async write(offset, data) {
        await inner.write(offset, data);
        if (!inOrder || offset < pos) {
          inOrder = false;
          return;
        }
        zeros(offset - pos);
        h.update(data);
        pos = offset + data.length;
      },
    });
    // A format ending in a hole still gets its full length.
    await fh.truncate(size);
    if (!inOrder || pos > size) return undefined;
    zeros(size - pos);
    return { sha256: h.digest('hex'), size };
  } finally {
    await fh.close();
  }
}
