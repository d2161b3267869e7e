import { lzmaModule, xzDecodeExact } from '../util/lzma-wasm.ts';
import { serveTasks } from '../util/worker.ts';

/** Decodes single-block .xz streams (formats/xz.ts cuts them) for inputs/xz-decode.ts. */
const mod = await lzmaModule();

serveTasks((task: { parts: Uint8Array[]; size: number }) => {
  const out = xzDecodeExact(mod, task.parts, task.size);
  return { reply: out, transfer: [out.buffer as ArrayBuffer] };
});
