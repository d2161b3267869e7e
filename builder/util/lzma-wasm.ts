import { OssifyError } from './errors.ts';

/**
 * liblzma compiled to WebAssembly (the node-liblzma package's build): the same bytes on every
 * machine, and no host `xz` behind a build. Only the raw exports ossify calls are typed.
 */
export interface LzmaModule {
  HEAPU8: Uint8Array;
  _malloc(size: number): number;
  _free(ptr: number): void;
  _lzma_stream_buffer_encode(filters: number, check: number, allocator: number, inBuf: number, inSize: number, outBuf: number, outPos: number, outSize: number): number;
  _lzma_stream_buffer_decode(memlimit: number, flags: number, allocator: number, inBuf: number, inPos: number, inSize: number, outBuf: number, outPos: number, outSize: number): number;
}
export interface LzmaWasm {
  initModule(): Promise<LzmaModule>;
  streamBufferDecode(input: Uint8Array, memlimit?: number | bigint): Uint8Array;
}

export const LZMA_OK = 0;
export const LZMA_BUF_ERROR = 10;

const LZMA_ERRORS: Record<number, string> = {
  5: 'not enough memory',
  6: 'memory limit reached',
  7: 'not an xz stream',
  8: 'unsupported options',
  9: 'corrupt data',
  10: 'data ends early or is longer than its index says',
};

let library: Promise<LzmaWasm> | undefined;
let loaded: Promise<LzmaModule> | undefined;

/** The node-liblzma WebAssembly library, imported once, with what to install when it is missing. */
export function lzmaLibrary(): Promise<LzmaWasm> {
  library ??= (import('node-liblzma/wasm' as string) as Promise<LzmaWasm>).catch((err: unknown) => {
    library = undefined;
    throw new OssifyError('xz needs the node-liblzma package', { hint: 'npm install node-liblzma', cause: err });
  });
  return library;
}

/** The WebAssembly module of this thread, instantiated once. */
export function lzmaModule(): Promise<LzmaModule> {
  loaded ??= lzmaLibrary().then((lib) => lib.initModule());
  loaded.catch(() => (loaded = undefined));
  return loaded;
}

/**
 * Decodes one whole .xz stream (given as consecutive pieces) whose decoded size is known exactly (from its index), into a
 * buffer of that size: one call, one allocation, and liblzma checks sizes, index and checks.
 */
export function xzDecodeExact(mod: LzmaModule, parts: readonly Uint8Array[], size: number): Uint8Array {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const scratch = mod._malloc(8 + 4 + 4);
  const inPtr = mod._malloc(length || 1);
  const outPtr = mod._malloc(size || 1);
  try {
    if (!scratch || !inPtr || !outPtr) throw new OssifyError(`xz: out of WebAssembly memory for a ${size}-byte block`);
    let at = inPtr;
    for (const p of parts) {
      mod.HEAPU8.set(p, at);
      at += p.length;
    }
    const dv = new DataView(mod.HEAPU8.buffer);
    dv.setBigUint64(scratch, 0xffff_ffff_ffff_ffffn, true);
    dv.setUint32(scratch + 8, 0, true);
    dv.setUint32(scratch + 12, 0, true);
    const ret = mod._lzma_stream_buffer_decode(scratch, 0, 0, inPtr, scratch + 8, length, outPtr, scratch + 12, size);
    if (ret !== LZMA_OK) throw new OssifyError(`xz: ${LZMA_ERRORS[ret] ?? `liblzma error ${ret}`}`);
    const written = new DataView(mod.HEAPU8.buffer).getUint32(scratch + 12, true);
    if (written !== size) throw new OssifyError(`xz: block decoded to ${written} bytes, its index says ${size}`);
    return mod.HEAPU8.slice(outPtr, outPtr + size);
  } finally {
    mod._free(outPtr);
    mod._free(inPtr);
    mod._free(scratch);
  }
}
