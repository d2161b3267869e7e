import { Deflate, gzip as pakoGzip } from 'pako';

type Level = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;

/**
 * gzip with bytes that depend only on the input: vanilla zlib's algorithm in JavaScript
 * (pako with zlib's legacy hash), not Node's bundled Chromium zlib, whose output has changed
 * between versions and CPUs. The header carries no name and MTIME 0, and the OS byte is
 * pinned to Unix, so every build host writes the same stream.
 */
const options = (level: Level) => ({ level, windowBits: 15, memLevel: 8, legacyHash: true, header: { os: 3, time: 0 } }) as ConstructorParameters<typeof Deflate>[0];

function pinHeader(out: Uint8Array): void {
  out.fill(0, 4, 8);
  out[9] = 3;
}

export function gzipDeterministic(data: Uint8Array, level: Level = 9): Uint8Array {
  const out = pakoGzip(data, options(level) as Parameters<typeof pakoGzip>[1]);
  pinHeader(out);
  return out;
}

/** The same stream as gzipDeterministic, made from chunks as they come (for inputs too large to hold). */
export async function* gzipDeterministicStream(chunks: AsyncIterable<Uint8Array>, level: Level = 9): AsyncGenerator<Uint8Array> {
  const d = new Deflate({ ...options(level), gzip: true, chunkSize: 1 << 20 } as ConstructorParameters<typeof Deflate>[0]);
  let out: Uint8Array[] = [];
  let first = true;
  d.onData = (c) => {
    if (first) pinHeader(c);
    first = false;
    out.push(c);
  };
  const drain = function* () {
    const ready = out;
    out = [];
    yield* ready;
  };
  for await (const c of chunks) {
    if (c.length === 0) continue;
    if (!d.push(c, false)) throw new Error(`gzip: ${d.msg}`);
    yield* drain();
  }
  if (!d.push(new Uint8Array(0), true)) throw new Error(`gzip: ${d.msg}`);
  yield* drain();
}
