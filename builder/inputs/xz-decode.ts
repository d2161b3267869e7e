import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { singleBlockStream, xzBlocks, XzFormatError, type XzBlock } from '../formats/xz.ts';
import { concatBytes } from '../util/bytes.ts';
import { InputError } from '../util/errors.ts';
import { lzmaModule, xzDecodeExact } from '../util/lzma-wasm.ts';
import { siblingModule, startWorker } from '../util/worker.ts';

/**
 * xz decoding in-process (liblzma as WebAssembly), block-parallel: a file's blocks are
 * independent (formats/xz.ts), so large multi-block members (a kernel package's 100 MB of
 * modules) are decoded on worker threads while small ones are decoded right here. Output is
 * yielded in file order, so it is the same bytes whatever finished first.
 */

/** Below this much decoded data a worker round trip costs more than it saves. */
const INLINE_LIMIT = 4 << 20;

interface Job {
  resolve(out: Uint8Array): void;
  reject(err: Error): void;
}

interface Pool {
  workers: { w: Worker; busy: number }[];
  jobs: Map<number, Job>;
  nextId: number;
  users: number;
}

let pool: Promise<Pool> | undefined;

function startPool(): Promise<Pool> {
  const p: Pool = { workers: [], jobs: new Map(), nextId: 0, users: 0 };
  const threads = Math.max(1, Math.min(availableParallelism(), 4));
  const failAll = (err: Error) => {
    pool = undefined;
    for (const j of p.jobs.values()) j.reject(err);
    p.jobs.clear();
    for (const s of p.workers) void s.w.terminate();
  };
  return Promise.all(
    Array.from({ length: threads }, () => {
      const w = startWorker(siblingModule(import.meta.url, 'xz-worker'), null);
      const slot = { w, busy: 0 };
      p.workers.push(slot);
      return new Promise<void>((ready, fail) => {
        w.on('message', (m: { ready?: true; id: number; out?: Uint8Array; error?: string }) => {
          if (m.ready) return ready();
          slot.busy--;
          const job = p.jobs.get(m.id);
          p.jobs.delete(m.id);
          if (m.out) job?.resolve(m.out);
          else job?.reject(new Error(m.error ?? 'xz worker failed'));
          if (p.users === 0 && p.jobs.size === 0) for (const s of p.workers) s.w.unref();
        });
        w.on('error', (e) => {
          fail(e);
          failAll(e);
        });
        w.on('exit', (code) => {
          const e = new Error(`xz worker exited with code ${code}`);
          fail(e);
          failAll(e);
        });
      });
    }),
  ).then(() => {
    for (const s of p.workers) s.w.unref();
    return p;
  });
}

async function decodeOnPool(parts: Uint8Array[], size: number): Promise<Uint8Array> {
  pool ??= startPool();
  const p = await pool;
  let best = p.workers[0]!;
  for (const s of p.workers) if (s.busy < best.busy) best = s;
  best.busy++;
  if (p.jobs.size === 0) for (const s of p.workers) s.w.ref();
  const id = p.nextId++;
  return new Promise((resolve, reject) => {
    p.jobs.set(id, { resolve, reject });
    // The block is a view into the whole package, and cloning a view clones its whole buffer:
    // copy just the stream's bytes once and hand that buffer over.
    const stream = concatBytes(parts);
    best.w.postMessage({ id, parts: [stream], size }, [stream.buffer as ArrayBuffer]);
  });
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
