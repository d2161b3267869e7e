import type { Worker } from 'node:worker_threads';
import type { Compressor, CompressorSpec } from './compress.ts';
import { OssifyError } from '../../util/errors.ts';
import { siblingModule, startWorker } from '../../util/worker.ts';

/** Compresses blocks; returns the compressed bytes or null when storing raw is smaller. */
export interface BlockCompressor {
  compress(raw: Uint8Array): Promise<{ raw: Uint8Array; out: Uint8Array | null }>;
  close(): Promise<void>;
}

/** Single-threaded: compresses on the calling thread. The reference the pool must match. */
export function inlineCompressor(comp: Compressor): BlockCompressor {
  return {
    async compress(raw) {
      return { raw, out: comp.compress(raw) };
    },
    async close() {},
  };
}

/** Compression workers run the same compressor code as the main thread (compress-worker.ts). */
function spawnWorker(spec: CompressorSpec): Worker {
  return startWorker(siblingModule(import.meta.url, 'compress-worker'), spec);
}

interface Pending {
  resolve: (r: { raw: Uint8Array; out: Uint8Array | null }) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  w: Worker;
  busy: number;
}

interface Pool {
  key: string;
  slots: Slot[];
  pending: Map<number, Pending>;
  nextId: number;
  failed?: unknown;
  users: number;
}

/**
 * Pools outlive one image: starting a worker (and, from source, its TypeScript loader) costs
 * far more than compressing a small image, so workers are kept per compressor setting and
 * unref'd while idle so they never hold the process open.
 */
const pools = new Map<string, Promise<Pool>>();

async function startPool(spec: CompressorSpec, threads: number, key: string): Promise<Pool> {
  const pool: Pool = { key, slots: [], pending: new Map(), nextId: 0, users: 0 };
  const failAll = (err: unknown) => {
    pool.failed ??= err;
    pools.delete(key);
    for (const p of pool.pending.values()) p.reject(pool.failed);
    pool.pending.clear();
  };
  try {
    await Promise.all(
      Array.from({ length: threads }, () => {
        const w = spawnWorker(spec);
        const slot: Slot = { w, busy: 0 };
        pool.slots.push(slot);
        return new Promise<void>((resolve, reject) => {
          w.on('message', (m: { ready?: true; id: number; raw: Uint8Array; out: Uint8Array | null }) => {
            if (m.ready) return resolve();
            slot.busy--;
            const p = pool.pending.get(m.id);
            pool.pending.delete(m.id);
            p?.resolve({ raw: m.raw, out: m.out });
          });
          w.on('error', (e) => {
            const err = new OssifyError(`compression worker failed: ${e.message}`, { cause: e });
            reject(err);
            failAll(err);
          });
          w.on('exit', (code) => {
            const err = new OssifyError(`compression worker exited with code ${code}`);
            reject(err);
            failAll(err);
          });
        });
      }),
    );
  } catch (e) {
    await Promise.all(pool.slots.map((s) => s.w.terminate()));
    throw e;
  }
  for (const s of pool.slots) s.w.unref();
  return pool;
}

/**
 * Parallel compression on worker threads. Blocks are handed to the least busy worker;
 * callers keep their own order (results are matched by id), so output does not depend
 * on which worker compressed what.
 */
export async function workerPool(spec: CompressorSpec, threads: number): Promise<BlockCompressor> {
  const key = JSON.stringify([spec.name, spec.level, spec.blockSize, spec.gzipEngine ?? 'portable', threads]);
  let p = pools.get(key);
  if (!p) {
    p = startPool(spec, threads, key);
    pools.set(key, p);
    p.catch(() => pools.delete(key));
  }
  const pool = await p;
  // Referenced while in use: awaiting only worker replies must keep the process alive.
  if (pool.users++ === 0) for (const s of pool.slots) s.w.ref();
  let closed = false;
  return {
    compress(raw) {
      if (pool.failed) return Promise.reject(pool.failed);
      let best = pool.slots[0]!;
      for (const s of pool.slots) if (s.busy < best.busy) best = s;
      best.busy++;
      const id = pool.nextId++;
      return new Promise((resolve, reject) => {
        pool.pending.set(id, { resolve, reject });
        best.w.postMessage({ id, raw }, [raw.buffer as ArrayBuffer]);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      if (--pool.users === 0) for (const s of pool.slots) s.w.unref();
    },
  };
}

/** Stops every idle pool's workers (tests and long-lived hosts may call it; nothing requires it). */
export async function shutdownPools(): Promise<void> {
  const all = await Promise.allSettled([...pools.values()]);
  pools.clear();
  await Promise.all(all.flatMap((r) => (r.status === 'fulfilled' ? r.value.slots.map((s) => s.w.terminate()) : [])));
}
