import type { Worker } from 'node:worker_threads';
import { gzipDeterministic } from './gzip.ts';
import { sha256Hex } from './hash.ts';
import { siblingModule, startWorker } from './worker.ts';

/**
 * gzip -9 of bytes known early, started on a worker thread while the build goes on, and
 * picked up by content when they are needed (the installer image's base layer: half a
 * second of pako that depends only on busybox and the device script). Whatever ran it, the
 * stream is gzipDeterministic's; a worker that failed just means compressing here.
 */

interface Ahead {
  worker: Worker;
  result: Promise<Uint8Array>;
}

const started = new Map<string, Ahead>();

export function gzipAhead(data: Uint8Array): void {
  const key = sha256Hex(data);
  if (started.has(key)) return;
  const worker = startWorker(siblingModule(import.meta.url, 'gzip-worker'), { data });
  const result = new Promise<Uint8Array>((resolve, reject) => {
    worker.once('message', (out: Uint8Array) => resolve(out));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`gzip worker exited with code ${code}`)));
  });
  result.catch(() => started.delete(key));
  // Never what keeps the process alive: a build that fails before it needs the result exits.
  worker.unref();
  started.set(key, { worker, result });
}

/** gzipDeterministic(data), from the worker gzipAhead started for these bytes when there is one. */
export async function gzipDeterministicAhead(data: Uint8Array): Promise<Uint8Array> {
  const key = sha256Hex(data);
  const ahead = started.get(key);
  if (ahead) {
    started.delete(key);
    ahead.worker.ref();
    try {
      return await ahead.result;
    } catch {
      // fall through: compress here
    } finally {
      ahead.worker.unref();
    }
  }
  return gzipDeterministic(data);
}
