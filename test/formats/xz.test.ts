import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { singleBlockStream, xzBlocks, XzFormatError } from '../../builder/formats/xz.ts';
import { xzDecode } from '../../builder/inputs/xz-decode.ts';
import { collectBytes } from '../../builder/util/bytes.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { prng } from '../helpers/prng.ts';

/**
 * The .xz container reader and the block-parallel decoder, against what xz-utils writes:
 * single- and multi-block files (`xz -T`, as dpkg-deb writes them), every check type,
 * concatenated streams with stream padding, and damage anywhere.
 */
const work = mkdtempSync(join(tmpdir(), 'ossify-xz-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Compressible but not trivial data: runs of a seeded PRNG's bytes over a small alphabet. */
function sample(size: number, seed: number): Buffer {
  const r = prng(seed);
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; ) {
    const run = 1 + Math.floor(r() * 64);
    const byte = Math.floor(r() * 24) + 97;
    out.fill(byte, i, Math.min(size, i + run));
    i += run;
  }
  return out;
}

let n = 0;
function xzFile(data: Uint8Array, args: string[]): Buffer {
  requireTool('xz', 'xz-utils');
  const file = join(work, `d${n++}`);
  writeFileSync(file, data);
  runOk('xz', ['-kf', ...args, file]);
  return readFileSync(`${file}.xz`);
}

const decode = async (xz: Uint8Array, origin = 'test.xz') => Buffer.from(await collectBytes(xzDecode(xz, origin)));

describe('xz container and decoder', () => {
  it('finds every block of a multi-block file from its index, and each block alone is a valid stream for xz -t', () => {
    const data = sample(3 << 20, 1);
    const xz = xzFile(data, ['-T2', '--block-size=1MiB']);
    const blocks = xzBlocks(xz);
    expect(blocks.map((b) => b.uncompressedSize)).toEqual([1 << 20, 1 << 20, 1 << 20]);
    for (const [i, b] of blocks.entries()) {
      const one = join(work, `block${i}.xz`);
      writeFileSync(one, Buffer.concat(singleBlockStream(xz, b)));
      const out = spawnSync('xz', ['-dc', one], { maxBuffer: 1 << 26 }).stdout;
      expect(Buffer.compare(out, data.subarray(i << 20, (i + 1) << 20))).toBe(0);
    }
  });

  it('decodes large multi-block files on worker threads and small ones inline, to the same bytes as xz', async () => {
    const big = sample(12 << 20, 2);
    expect(Buffer.compare(await decode(xzFile(big, ['-T2', '--block-size=3MiB'])), big)).toBe(0);
    const small = sample(100_000, 3);
    expect(Buffer.compare(await decode(xzFile(small, ['-0'])), small)).toBe(0);
  });

  it('reads every check type, empty files, and concatenated streams with stream padding', async () => {
    for (const check of ['none', 'crc32', 'crc64', 'sha256']) {
      const data = sample(300_000, 4);
      expect(Buffer.compare(await decode(xzFile(data, ['-C', check, '-T2', '--block-size=100KiB'])), data), check).toBe(0);
    }
    expect((await decode(xzFile(Buffer.alloc(0), []))).length).toBe(0);
    const a = sample(50_000, 5);
    const b = sample(70_000, 6);
    const joined = Buffer.concat([xzFile(a, []), Buffer.alloc(8), xzFile(b, ['--block-size=20KiB', '-T2']), Buffer.alloc(4)]);
    expect(Buffer.compare(await decode(joined), Buffer.concat([a, b]))).toBe(0);
  });

  it('any damage is an InputError naming the input, never wrong bytes', async () => {
    const data = sample(400_000, 7);
    const xz = xzFile(data, ['-T2', '--block-size=128KiB']);
    expect(() => xzBlocks(xz.subarray(0, xz.length - 5))).toThrow(XzFormatError);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: xz.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, flip) => {
        const bad = Buffer.from(xz);
        bad[at]! ^= flip;
        const r = await decode(bad, 'deb:linux-image data.tar.xz').then(
          (out) => ({ out }),
          (err: unknown) => ({ err }),
        );
        // A flipped bit in data covered by a check must be caught; CRC-less regions (block
        // padding) may decode, but then only to the original bytes.
        if ('out' in r) expect(Buffer.compare(r.out, data)).toBe(0);
        else {
          expect(r.err).toBeInstanceOf(InputError);
          expect((r.err as Error).message).toMatch(/^deb:linux-image data\.tar\.xz: /);
        }
      }),
      { numRuns: 60, seed: 11 },
    );
  });

  it('xz -t accepts what the container writer produces for any block split', () => {
    requireTool('xz', 'xz-utils');
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200_000 }), fc.integer({ min: 4, max: 64 }), (size, blockKiB) => {
        const data = sample(size, size);
        const xz = xzFile(data, ['-T2', `--block-size=${blockKiB}KiB`]);
        const blocks = xzBlocks(xz);
        expect(blocks.reduce((s, b) => s + b.uncompressedSize, 0)).toBe(size);
        const last = join(work, 'last.xz');
        writeFileSync(last, Buffer.concat(singleBlockStream(xz, blocks[blocks.length - 1]!)));
        expect(run('xz', ['-t', last]).code).toBe(0);
      }),
      { numRuns: 15, seed: 5 },
    );
  });
});
