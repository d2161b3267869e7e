import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { reusableDeflate, reusableZstd } from '../../builder/util/zlib-handle.ts';
import { ossify } from '../helpers/cli.ts';
import { run, runOk } from '../helpers/oracle.ts';
import { requireSquashfsOracles } from '../helpers/squashfs.ts';
import { GOLDEN, goldenTree } from '../helpers/squashfs-golden.ts';
import { pattern } from '../helpers/squashfs-trees.ts';

/**
 * `--gzip-engine node`: Node's zlib instead of pako. Its bytes are not canonical zlib's, so the
 * image differs from the portable one, but it must hold the same files (sqfsdiff), compress as
 * well, and still not depend on the thread count.
 */
describe('squashfs gzip engines', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-gzip-engine-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('node: same files as the portable image, within 2% of its size, same bytes at any thread count', async () => {
    const portable = join(work, 'portable.sqfs');
    await writeSquashfs(goldenTree(), portable, { compression: 'gzip', threads: 2 });
    expect(createHash('sha256').update(await readFile(portable)).digest('hex')).toBe(GOLDEN.gzip);
    const hashes: string[] = [];
    for (const threads of [1, 2, 4]) {
      const img = join(work, `node-${threads}.sqfs`);
      const r = await writeSquashfs(goldenTree(), img, { compression: 'gzip', gzipEngine: 'node', threads });
      expect(r.engine).toBe(`node:zlib ${process.versions.zlib}`);
      hashes.push(createHash('sha256').update(await readFile(img)).digest('hex'));
    }
    expect(new Set(hashes).size).toBe(1);
    const img = join(work, 'node-1.sqfs');
    const diff = run('sqfsdiff', ['-O', '-a', portable, '-b', img]);
    expect(diff.stdout + diff.stderr).toBe('');
    expect(diff.code).toBe(0);
    runOk('unsquashfs', ['-n', '-d', join(work, 'x'), img]);
    const [a, b] = [(await readFile(portable)).length, (await readFile(img)).length];
    expect(Math.abs(a - b) / a).toBeLessThan(0.02);
  });

  it('the CLI takes --gzip-engine, reports the engine, and refuses it for other compressors or unknown names', async () => {
    const dir = join(work, 'src');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'data'), pattern(400_000, 3));
    const out = join(work, 'cli.sqfs');
    const ok = await ossify(['squashfs', dir, '-o', out, '--comp', 'gzip', '--gzip-engine', 'node', '--epoch', '0', '--json']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).engine).toBe(`node:zlib ${process.versions.zlib}`);
    expect(runOk('unsquashfs', ['-cat', out, 'data'], { encoding: 'latin1' }).length).toBe(400_000);
    const plain = await ossify(['squashfs', dir, '-o', out, '--comp', 'gzip', '--epoch', '0']);
    expect(plain.stdout).toContain('level 9 (pako (canonical zlib))');
    const zstd = await ossify(['squashfs', dir, '-o', out, '--comp', 'zstd', '--gzip-engine', 'node']);
    expect(zstd.exitCode).toBe(2);
    expect(zstd.stderr).toContain('--gzip-engine applies to --comp gzip only');
    const bad = await ossify(['squashfs', dir, '-o', out, '--comp', 'gzip', '--gzip-engine', 'fast']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('unknown gzip engine "fast"');
  });

  it('the reusable native handles write what the one-shot calls write, and say when the output does not fit', () => {
    const shot = reusableDeflate(9);
    expect(shot, 'Node internals changed: the reusable deflate handle is unavailable').toBeTypeOf('function');
    for (const data of [pattern(131072, 1), pattern(131072, 2, true), pattern(4097, 3), new Uint8Array(0), new Uint8Array(131072)]) {
      const got = shot!(data, new Uint8Array(data.length + 64));
      expect(Buffer.compare(got!, deflateSync(data, { level: 9, windowBits: 15, memLevel: 8 }))).toBe(0);
      expect(inflateSync(got!).equals(Buffer.from(data))).toBe(true);
    }
    // Incompressible data cannot fit in its own size: null, not a truncated stream.
    const noise = pattern(65536, 4, true);
    expect(shot!(noise, new Uint8Array(noise.length))).toBeNull();
    // zstd's handle exists only where node:zlib has zstd (Node >= 22.15); zstd-engines.test.ts runs it there.
    if (typeof (process.versions as Record<string, unknown>).zstd === 'string') expect(reusableZstd(15)).toBeTypeOf('function');
    else expect(reusableZstd(15)).toBeUndefined();
  });
});
