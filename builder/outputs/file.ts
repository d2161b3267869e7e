import { createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileHandleSink, type BlockSink } from '../util/sink.ts';

/** A stream of chunks into a new file. */
export async function writeChunks(dest: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  await pipeline(Readable.from(chunks), createWriteStream(dest, { flags: 'w', highWaterMark: 4 << 20 }));
}

/** A new file for a writer that places its bytes (holes stay holes); `size` is its final length. */
export async function writePositioned(dest: string, write: (sink: BlockSink) => Promise<number>): Promise<void> {
  const fh = await open(dest, 'w');
  try {
    const size = await write(fileHandleSink(fh));
    // A format ending in a hole (none today) still gets its full length.
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}
