import * as zlib from 'node:zlib';

/**
 * Node's one-shot `zlib.*Sync` calls build and free a whole compression context per call: for
 * zstd level 15 that is megabytes of tables, allocated, faulted in and zeroed for every 128 KiB
 * block, and with two threads doing it the page faults serialise on the process's memory map
 * (measured: a third of a core). The stream objects keep their context, but only offer async
 * whole-stream use. So this drives a stream's native handle synchronously, one buffer in and
 * one complete frame out per call, reusing its context.
 *
 * The handle is Node's internal API. Every reusable compressor is checked against the public
 * one-shot call on a probe when it is made; if the internals ever change shape or answer
 * differently, callers get `undefined` and use the public call instead, slower but the same.
 */
interface NativeHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  reset(): void;
  init(...args: unknown[]): void;
  onerror?: (message: string, errno: number) => void;
}

interface StreamInternals {
  _handle?: NativeHandle;
  _writeState?: Uint32Array;
}

/** Compresses a whole buffer into one complete frame/stream; null when `out` is too small. */
export type OneShot = (input: Uint8Array, out: Uint8Array) => Uint8Array | null;

function internals(stream: object): { h: NativeHandle; state: Uint32Array } | undefined {
  const s = stream as StreamInternals;
  const h = s._handle;
  const state = s._writeState;
  if (!h || !(state instanceof Uint32Array) || typeof h.writeSync !== 'function' || typeof h.reset !== 'function' || typeof h.init !== 'function') return undefined;
  return { h, state };
}

/** Runs one finishing write; returns the output, or null if it did not all fit in `out`. */
function finish(h: NativeHandle, state: Uint32Array, flush: number, input: Uint8Array, out: Uint8Array): Uint8Array | null {
  let failure: string | undefined;
  h.onerror = (message) => {
    failure = message;
  };
  h.writeSync(flush, input, 0, input.length, out, 0, out.length);
  if (failure !== undefined) throw new Error(failure);
  const [availOut, availIn] = [state[0]!, state[1]!];
  // Space left over after a finishing write means the stream ended inside the buffer.
  if (availIn !== 0 || availOut === 0) return null;
  return out.subarray(0, out.length - availOut);
}

function probe(): Uint8Array {
  const p = new Uint8Array(65536 + 123);
  let x = 0x2545f491;
  for (let i = 0; i < p.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    p[i] = i % 7 === 0 ? x >>> 24 : (i >> 5) & 0xff;
  }
  return p;
}

function agrees(shot: OneShot, reference: (d: Uint8Array) => Uint8Array): boolean {
  try {
    const data = probe();
    for (const d of [data, data.subarray(0, 9000), data.subarray(100, 100)]) {
      const got = shot(d, new Uint8Array(d.length + 1024));
      if (!got || Buffer.compare(got, reference(d)) !== 0) return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** zstd at `level`, one frame per call with the content size recorded (as zstdCompressSync with pledgedSrcSize). */
export function reusableZstd(level: number): OneShot | undefined {
  const z = zlib as unknown as {
    createZstdCompress?: (o: object) => object;
    zstdCompressSync?: (d: Uint8Array, o: object) => Buffer;
    constants: Record<string, number>;
  };
  if (!z.createZstdCompress || !z.zstdCompressSync) return undefined;
  const { ZSTD_c_compressionLevel: levelKey, ZSTD_e_end: end } = z.constants;
  if (levelKey === undefined || end === undefined) return undefined;
  const opts = (size: number) => ({ params: { [levelKey]: level }, pledgedSrcSize: size });
  let stream: object;
  try {
    stream = z.createZstdCompress(opts(0));
  } catch {
    return undefined;
  }
  const inner = internals(stream);
  if (!inner) return undefined;
  const { h, state } = inner;
  // The same parameter array the stream constructor passes: every parameter unset but the level.
  const params = new Uint32Array(Math.max(...Object.entries(z.constants).filter(([k]) => k.startsWith('ZSTD_c_')).map(([, v]) => v)) + 1).fill(-1 >>> 0);
  params[levelKey] = level;
  const shot: OneShot = (input, out) => {
    // A re-init keeps the context's memory and sets this frame's size (a bare reset forgets the level).
    h.reset();
    h.init(params, input.length, state, () => {});
    return finish(h, state, end, input, out);
  };
  return agrees(shot, (d) => z.zstdCompressSync!(d, opts(d.length))) ? shot : undefined;
}

/** A zlib stream (window 15, memLevel 8, default strategy) at `level`, as deflateSync writes it. */
export function reusableDeflate(level: number): OneShot | undefined {
  const settings = { level, windowBits: 15, memLevel: 8 };
  let stream: object;
  try {
    stream = zlib.createDeflate(settings);
  } catch {
    return undefined;
  }
  const inner = internals(stream);
  if (!inner) return undefined;
  const { h, state } = inner;
  const shot: OneShot = (input, out) => {
    // deflateReset keeps the level and window: only the stream state starts over.
    h.reset();
    return finish(h, state, zlib.constants.Z_FINISH, input, out);
  };
  return agrees(shot, (d) => zlib.deflateSync(d, settings)) ? shot : undefined;
}
