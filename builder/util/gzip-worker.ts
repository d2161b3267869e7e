import { parentPort, workerData } from 'node:worker_threads';
import { gzipDeterministic } from './gzip.ts';

/** One gzip -9 off the main thread (gzip-ahead.ts): the same code, so the same bytes. */
const { data } = workerData as { data: Uint8Array };
let out = gzipDeterministic(data);
if (out.byteOffset !== 0 || out.byteLength !== out.buffer.byteLength) out = out.slice();
parentPort!.postMessage(out, [out.buffer as ArrayBuffer]);
