import { parentPort } from 'node:worker_threads';
import { lzmaModule, xzDecodeExact } from '../util/lzma-wasm.ts';

/** Decodes single-block .xz streams (formats/xz.ts cuts them) for inputs/xz-decode.ts. */
const mod = await lzmaModule();

parentPort!.on('message', (msg: { id: number; parts: Uint8Array[]; size: number }) => {
  try {
    const out = xzDecodeExact(mod, msg.parts, msg.size);
    parentPort!.postMessage({ id: msg.id, out }, [out.buffer as ArrayBuffer]);
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: (err as Error).message });
  }
});
parentPort!.postMessage({ ready: true });
