import { workerData } from 'node:worker_threads';
import { createCompressor, type CompressorSpec } from './compress.ts';
import { serveTasks } from '../../util/worker.ts';

/**
 * Compression worker: receives raw blocks, returns them with their compressed form. The
 * compressor is the very same code the main thread uses, so a block compresses to the
 * same bytes wherever it runs.
 */
const comp = await createCompressor(workerData as CompressorSpec);

serveTasks((raw: Uint8Array) => {
  let out = comp.compress(raw);
  if (out && (out.byteOffset !== 0 || out.byteLength !== out.buffer.byteLength)) out = out.slice();
  const transfer: ArrayBuffer[] = [raw.buffer as ArrayBuffer];
  if (out) transfer.push(out.buffer as ArrayBuffer);
  return { reply: { raw, out }, transfer };
});
