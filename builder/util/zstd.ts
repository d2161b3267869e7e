import * as zlib from 'node:zlib';
import { compressUsingDict, createCCtx, decompress as wasmDecompress, init } from '@bokuweb/zstd-wasm';
import { reusableZstd, type OneShot } from './zlib-handle.ts';

/**
 * One zstd for the whole program: Node's own libzstd (`node:zlib`, Node ≥ 22.15) when the
 * runtime has it and it is a release proven to write the same bytes as the WebAssembly build,
 * else `@bokuweb/zstd-wasm`. Both write one frame per call with the content size recorded and
 * no checksum (what mksquashfs and `ZSTD_compress` write), so an image does not depend on
 * which engine made it; test/util/zstd-engines.test.ts proves that on a runtime that has both.
 */
export interface ZstdCodec {
  readonly engine: ZstdEngine;
  /** One frame, content size recorded, no checksum. */
  compress(data: Uint8Array, level: number): Uint8Array;
  /** Decompresses exactly one frame of at most `maxSize` bytes (throws beyond it). */
  decompress(frame: Uint8Array, maxSize: number): Uint8Array;
}

export type ZstdEngine = 'node' | 'wasm';

/**
 * libzstd releases of Node's bundled copy whose output is byte-identical to the wasm build
 * at every level (checked by test/util/zstd-engines.test.ts). Another release may compress
 * differently, so it is used for decompression only unless OSSIFY_ZSTD=node forces it.
 */
export const NODE_ZSTD_SAME_BYTES = ['1.5.7'];

interface NodeZstd {
  zstdCompressSync(data: Uint8Array, opts: object): Buffer;
  zstdDecompressSync(data: Uint8Array, opts: object): Buffer;
  constants: { ZSTD_c_compressionLevel: number };
}

function nodeZstd(): NodeZstd | undefined {
  const z = zlib as unknown as Partial<NodeZstd>;
  return typeof z.zstdCompressSync === 'function' && typeof z.zstdDecompressSync === 'function' ? (z as NodeZstd) : undefined;
}

/** Which engine compresses here: OSSIFY_ZSTD=wasm|node overrides the automatic choice. */
export function zstdEngine(env: NodeJS.ProcessEnv = process.env): ZstdEngine {
  const forced = env.OSSIFY_ZSTD;
  if (forced === 'wasm') return 'wasm';
  if (forced === 'node') {
    if (!nodeZstd()) throw new Error(`OSSIFY_ZSTD=node, but Node ${process.version} has no zstd in node:zlib (it arrived in 22.15)`);
    return 'node';
  }
  if (forced !== undefined && forced !== '') throw new Error(`OSSIFY_ZSTD must be "node" or "wasm", got ${JSON.stringify(forced)}`);
  const version = (process.versions as Record<string, string | undefined>).zstd;
  return nodeZstd() && version && NODE_ZSTD_SAME_BYTES.includes(version) ? 'node' : 'wasm';
}

let wasmReady: Promise<void> | undefined;
/** Loads the WebAssembly once per thread (each worker thread has its own instance). */
function initWasm(): Promise<void> {
  wasmReady ??= init();
  wasmReady.catch(() => {
    wasmReady = undefined;
  });
  return wasmReady;
}

const codecs = new Map<ZstdEngine, Promise<ZstdCodec>>();

/** The codec for this thread (created once per engine). */
export function zstdCodec(engine: ZstdEngine = zstdEngine()): Promise<ZstdCodec> {
  let c = codecs.get(engine);
  if (!c) {
    c = engine === 'node' ? Promise.resolve(nodeCodec(nodeZstd()!)) : wasmCodec();
    codecs.set(engine, c);
    c.catch(() => codecs.delete(engine));
  }
  return c;
}

/** ZSTD_compressBound: room for any frame of `n` bytes, so one finishing call always completes. */
function compressBound(n: number): number {
  return n + (n >>> 8) + (n < 131072 ? (131072 - n) >>> 11 : 0) + 64;
}

function nodeCodec(z: NodeZstd): ZstdCodec {
  const levelKey = z.constants.ZSTD_c_compressionLevel;
  const reusable = new Map<number, OneShot | null>();
  return {
    engine: 'node',
    compress(data, level) {
      let shot = reusable.get(level);
      if (shot === undefined) {
        shot = reusableZstd(level) ?? null;
        reusable.set(level, shot);
      }
      const out = shot?.(data, new Uint8Array(compressBound(data.length)));
      // pledgedSrcSize makes the streaming API pick ZSTD_compress's parameters and record the size.
      return out ?? z.zstdCompressSync(data, { params: { [levelKey]: level }, pledgedSrcSize: data.length });
    },
    decompress(frame, maxSize) {
      return z.zstdDecompressSync(frame, { maxOutputLength: Math.max(maxSize, 1) });
    },
  };
}

async function wasmCodec(): Promise<ZstdCodec> {
  await initWasm();
  // One compression context per thread: ZSTD_compress would allocate and free one per call.
  const cctx = createCCtx();
  const noDict = new Uint8Array(0);
  const native = nodeZstd();
  return {
    engine: 'wasm',
    compress(data, level) {
      return compressUsingDict(cctx, data, noDict, level);
    },
    decompress(frame, maxSize) {
      // Decompression is exact in any libzstd; Node's, where present, is bounded before it allocates.
      if (native) return native.zstdDecompressSync(frame, { maxOutputLength: Math.max(maxSize, 1) });
      const out = wasmDecompress(frame, { defaultHeapSize: Math.max(maxSize, 1) });
      if (out.length > maxSize) throw new Error(`zstd frame larger than ${maxSize} bytes`);
      return out;
    },
  };
}
