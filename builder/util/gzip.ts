import { gzip as pakoGzip } from 'pako';

/**
 * gzip with bytes that depend only on the input: vanilla zlib's algorithm in JavaScript
 * (pako with zlib's legacy hash), not Node's bundled Chromium zlib, whose output has changed
 * between versions and CPUs. The header carries no name and MTIME 0, and the OS byte is
 * pinned to Unix, so every build host writes the same stream.
 */
export function gzipDeterministic(data: Uint8Array, level: 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 = 9): Uint8Array {
  const out = pakoGzip(data, { level, windowBits: 15, memLevel: 8, legacyHash: true, header: { os: 3, time: 0 } } as Parameters<typeof pakoGzip>[1]);
  out.fill(0, 4, 8);
  out[9] = 3;
  return out;
}
