import { availableParallelism } from 'node:os';
import { singleBlockStream, xzBlocks, XzFormatError, type XzBlock } from '../formats/xz.ts';
import { concatBytes } from '../util/bytes.ts';
import { InputError } from '../util/errors.ts';
import { lzmaModule, xzDecodeExact } from '../util/lzma-wasm.ts';
import { sharedTaskPool, siblingModule } from '../util/worker.ts';

/**
 * xz decoding in-process (liblzma as WebAssembly), block-parallel: a file's blocks are
 * independent (formats/xz.ts), so large multi-block members (a kernel package's 100 MB of
 * modules) are decoded on worker threads while small ones are decoded right here. Output is
 * yielded in file order, so it is the same bytes whatever finished first.
 */

/** Below this much decoded data a worker round trip costs more than it saves. */
const INLINE_LIMIT = 4 << 20;

async function decodeOnPool(parts: Uint8Array[], size: number): Promise<Uint8Array> {
  const p = await sharedTaskPool<{ parts: Uint8Array[]; size: number }, Uint8Array>('xz', {
    entry: siblingModule(import.meta.url, 'xz-worker'),
    threads: Math.max(1, Math.min(availableParallelism(), 4)),
    name: 'xz worker',
  });
  // The block is a view into the whole package, and cloning a view clones its whole buffer:
  // copy just the stream's bytes once and hand that buffer over.
  const stream = concatBytes(parts);
  return p.run({ parts: [stream], size }, [stream.buffer as ArrayBuffer]);
}

/** Decoded bytes of an .xz file, in order. Corrupt or truncated data is an InputError naming `origin`. */
export async function* xzDecode(data: Uint8Array, origin: string): AsyncGenerator<Uint8Array> {
  let blocks: XzBlock[];
  try {
    blocks = xzBlocks(data);
  } catch (err) {
    if (!(err instanceof XzFormatError)) throw err;
    throw new InputError(`${origin}: not a valid xz file: ${err.message}`, { cause: err });
  }
  const total = blocks.reduce((s, b) => s + b.uncompressedSize, 0);
  const fail = (err: unknown): never => {
    throw new InputError(`${origin}: xz decompression failed: ${(err as Error).message}`, { cause: err });
  };
  if (total <= INLINE_LIMIT || blocks.length === 1 && total <= 4 * INLINE_LIMIT) {
    const mod = await lzmaModule();
    for (const b of blocks) {
      try {
        yield xzDecodeExact(mod, singleBlockStream(data, b), b.uncompressedSize);
      } catch (err) {
        fail(err);
      }
    }
    return;
  }
  // Every block is queued at once so all threads stay busy; each is yielded when its turn comes.
  const pending = blocks.map((b) => decodeOnPool(singleBlockStream(data, b), b.uncompressedSize));
  for (const p of pending) p.catch(() => {});
  for (const p of pending) {
    try {
      yield await p;
    } catch (err) {
      fail(err);
    }
  }
}
