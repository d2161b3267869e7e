import { concatBytes } from '../../util/bytes.ts';
import { inflateSync } from 'node:zlib';
import { CompressorId } from './constants.ts';
import { InputError } from '../../util/errors.ts';
import { createDeflate } from './deflate.ts';
import { createZstd } from './zstd.ts';

export type CompressionName = 'gzip' | 'zstd' | 'xz' | 'none';

/**
 * Which deflate makes gzip blocks. `portable` (pako with zlib's hash) writes canonical zlib
 * bytes, the same as mksquashfs, on every machine. `node` is Node's built-in zlib, Chromium's
 * fork: about twice as fast, but its bytes follow the Node build and the CPU (its match hash
 * uses CRC32C instructions where the CPU has them), so images are reproducible only on like
 * machines. zstd needs no such choice: its engines write identical bytes (util/zstd.ts).
 */
export type GzipEngine = 'portable' | 'node';
export const GZIP_ENGINES: readonly GzipEngine[] = ['portable', 'node'];

/**
 * A block compressor. `compress` returns `null` when the result would not be smaller than
 * the input, so callers store the block raw (squashfs never stores an expanded block).
 * Every implementation is pure and deterministic: same input, same level, same bytes, on
 * any machine and in any thread.
 */
export interface Compressor {
  readonly name: CompressionName;
  readonly id: CompressorId;
  readonly level: number;
  /** Compressor options written after the superblock, or null when the defaults apply (as mksquashfs decides). */
  readonly options: Uint8Array | null;
  /** What compresses, for reports: e.g. "pako (canonical zlib)", "node:zlib zstd 1.5.7". */
  readonly engine: string;
  compress(data: Uint8Array): Uint8Array | null;
  decompress(data: Uint8Array, maxSize: number): Uint8Array;
}

export interface CompressorSpec {
  name: CompressionName;
  level?: number;
  blockSize: number;
  /** gzip only; default portable. */
  gzipEngine?: GzipEngine;
}

/** mksquashfs' defaults: options are recorded only when they differ from these. */
export const DEFAULT_LEVEL: Record<CompressionName, number> = { gzip: 9, zstd: 15, xz: 6, none: 0 };
const LEVEL_RANGE: Record<CompressionName, [number, number]> = { gzip: [1, 9], zstd: [1, 22], xz: [0, 9], none: [0, 0] };

export function validateSpec(spec: CompressorSpec): Required<CompressorSpec> {
  const gzipEngine = spec.gzipEngine ?? 'portable';
  if (!GZIP_ENGINES.includes(gzipEngine)) throw new InputError(`unknown gzip engine ${JSON.stringify(gzipEngine)}`, { hint: `use ${GZIP_ENGINES.join(' or ')}` });
  if (gzipEngine !== 'portable' && spec.name !== 'gzip') throw new InputError(`the gzip engine applies to gzip only, not ${spec.name}`);
  if ((spec.name as string) === 'lz4') throw new InputError('lz4 is not supported', { hint: 'use gzip, zstd, xz or none' });
  const level = spec.level ?? DEFAULT_LEVEL[spec.name];
  const range = Object.hasOwn(LEVEL_RANGE, spec.name) ? LEVEL_RANGE[spec.name] : undefined;
  if (!range) throw new InputError(`unknown compressor ${JSON.stringify(spec.name)}`, { hint: 'use gzip, zstd, xz or none' });
  if (!Number.isInteger(level) || level < range[0] || level > range[1]) {
    throw new InputError(`${spec.name} level must be an integer in ${range[0]}..${range[1]}, got ${spec.level}`);
  }
  return { name: spec.name, level, blockSize: spec.blockSize, gzipEngine };
}

function u32le(...vals: number[]): Uint8Array {
  const b = new Uint8Array(4 * vals.length);
  const dv = new DataView(b.buffer);
  vals.forEach((v, i) => dv.setUint32(i * 4, v, true));
  return b;
}

/** Creates a ready-to-use compressor (loads WebAssembly where needed: zstd, xz). */
export async function createCompressor(spec: CompressorSpec): Promise<Compressor> {
  const { name, level, blockSize, gzipEngine } = validateSpec(spec);
  switch (name) {
    case 'none':
      return {
        name,
        id: CompressorId.Gzip,
        level,
        options: null,
        engine: 'stored',
        compress: () => null,
        decompress: (d, max) => zlibInflate(d, max),
      };
    case 'gzip': {
      const z = await createDeflate(level, Math.max(blockSize, 8192), gzipEngine);
      return {
        name,
        id: CompressorId.Gzip,
        level,
        options: level === 9 ? null : concat(u32le(level), new Uint8Array([15, 0, 0, 0])),
        engine: z.engine,
        compress: (d) => z.compress(d),
        decompress: (d, max) => z.decompress(d, max),
      };
    }
    case 'zstd': {
      // Metadata blocks are 8 KiB, data blocks at most blockSize.
      const z = await createZstd(level, Math.max(blockSize, 8192));
      return {
        name,
        id: CompressorId.Zstd,
        level,
        options: level === 15 ? null : u32le(level),
        engine: z.engine,
        compress: (d) => z.compress(d),
        decompress: (d, max) => z.decompress(d, max),
      };
    }
    case 'xz': {
      const { createXz } = await import('./xz.ts');
      return createXz(level, blockSize);
    }
  }
}

function zlibInflate(d: Uint8Array, max: number): Uint8Array {
  return inflateSync(d, { maxOutputLength: Math.max(max, 1) });
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(parts);
}
