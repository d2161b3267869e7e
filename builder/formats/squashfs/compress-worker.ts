import { parentPort, workerData } from 'node:worker_threads';
import { createCompressor, type CompressorSpec } from './compress.ts';

/**
 * Compression worker: receives raw blocks, returns them with their compressed form. The
 * compressor is the very same code the main thread uses, so a block compresses to the
 * same bytes wherever it runs.
 */
const comp = await createCompressor(workerData as CompressorSpec);

parentPort!.on('message', (msg: { id: number; raw: Uint8Array }) => {
  let out = comp.compress(msg.raw);
  if (out && (out.byteOffset !== 0 || out.byteLength !== out.buffer.byteLength)) out = out.slice();
  const transfer: ArrayBuffer[] = [msg.raw.buffer as ArrayBuffer];
  if (out) transfer.push(out.buffer as ArrayBuffer);
  parentPort!.postMessage({ id: msg.id, raw: msg.raw, out }, transfer);
});
parentPort!.postMessage({ ready: true });
