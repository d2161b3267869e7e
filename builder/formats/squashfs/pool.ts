import type { Compressor, CompressorSpec } from './compress.ts';
import { sharedTaskPool, shutdownTaskPools, siblingModule } from '../../util/worker.ts';

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

/**
 * Parallel compression on worker threads (compress-worker.ts runs the same compressor code as
 * the main thread). Blocks are handed to the least busy worker; callers keep their own order
 * (results are matched by id), so output does not depend on which worker compressed what.
 * Pools are kept per compressor setting for later images.
 */
export async function workerPool(spec: CompressorSpec, threads: number): Promise<BlockCompressor> {
  const key = JSON.stringify(['squashfs', spec.name, spec.level, spec.blockSize, spec.gzipEngine ?? 'portable', threads]);
  const pool = await sharedTaskPool<Uint8Array, { raw: Uint8Array; out: Uint8Array | null }>(key, {
    entry: siblingModule(import.meta.url, 'compress-worker'),
    workerData: spec,
    threads,
    name: 'compression worker',
  });
  // Held while in use: awaiting only worker replies must keep the process alive.
  const release = pool.hold();
  return {
    compress: (raw) => pool.run(raw, [raw.buffer as ArrayBuffer]),
    async close() {
      release();
    },
  };
}

/** Stops the kept worker pools, these and xz decoding's (tests and benchmarks call it; nothing requires it). */
export const shutdownPools = shutdownTaskPools;
