import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs, type SquashfsOptions } from '../../builder/formats/squashfs/index.ts';
import { bytesContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { GOLDEN, goldenTree } from '../helpers/squashfs-golden.ts';
import { run, runOk } from '../helpers/oracle.ts';
import { requireSquashfsOracles } from '../helpers/squashfs.ts';
import { pattern } from '../helpers/squashfs-trees.ts';

describe('squashfs writer: byte-identical output', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-sqfs-det-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const compression of ['gzip', 'zstd', 'xz', 'none'] as const) {
    it(`${compression}: 1 thread matches the pinned hash, 2 and 4 threads the same bytes`, async () => {
      const hashOf = async (threads: number) => {
        const img = join(work, `g-${compression}-${threads}.sqfs`);
        await writeSquashfs(goldenTree(), img, { compression, threads });
        return createHash('sha256').update(await readFile(img)).digest('hex');
      };
      const single = await hashOf(1);
      expect(single).toBe(GOLDEN[compression]);
      for (const threads of [2, 4]) expect(await hashOf(threads), `${threads} threads`).toBe(single);
    });
  }

  /** One file of `data` written by us and by mksquashfs (same settings), without xattrs. */
  async function pair(compression: SquashfsOptions['compression'], level: number | undefined, extra: string[], data: Uint8Array): Promise<{ ours: string; theirs: string }> {
    const tag = `${compression}-${level}`;
    const src = join(work, `src-${tag}`);
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'f'), data);
    const t = new FileTree();
    t.set('f', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, content: bytesContent(data) });
    const ours = join(work, `one-${tag}.sqfs`);
    const theirs = join(work, `onem-${tag}.sqfs`);
    await writeSquashfs(t, ours, { compression, threads: 2, ...(level === undefined ? {} : { level }) });
    runOk('mksquashfs', [src, theirs, '-comp', compression, ...extra, '-noappend', '-quiet', '-no-progress', '-no-xattrs', '-processors', '2']);
    return { ours, theirs };
  }
  const inodeTable = (buf: Buffer) => Number(buf.readBigUInt64LE(64));

  // gzip (pako with legacyHash = canonical zlib) and xz (liblzma with mksquashfs' settings)
  // write the same data blocks as mksquashfs on Debian bookworm, byte for byte.
  const identical: [SquashfsOptions['compression'], number | undefined, string[]][] = [
    ['gzip', undefined, []],
    ['xz', undefined, []],
  ];
  for (const [compression, level, extra] of identical) {
    it(`${compression}${level === undefined ? '' : ` level ${level}`}: data blocks are byte-identical to mksquashfs' ${extra.join(' ')}`, async () => {
      const { ours, theirs } = await pair(compression, level, extra, pattern(3 * 131072 + 5000, 42));
      const a = await readFile(ours);
      const b = await readFile(theirs);
      // Superblock flags, compressor options and every data block up to the inode table.
      expect(a.readUInt16LE(24)).toBe(b.readUInt16LE(24));
      expect(inodeTable(a)).toBe(inodeTable(b));
      expect(a.subarray(96, inodeTable(a)).equals(b.subarray(96, inodeTable(b)))).toBe(true);
    });
  }

  // zstd comes from @bokuweb/zstd-wasm, whose libzstd need not be the version mksquashfs links
  // against, so blocks may differ by a few bytes: the images must hold the same files, record
  // the same options and flags, and compress to within 1% of each other.
  const equivalent: [SquashfsOptions['compression'], number | undefined, string[]][] = [
    ['zstd', undefined, []],
    ['zstd', 19, ['-Xcompression-level', '19']],
  ];
  for (const [compression, level, extra] of equivalent) {
    it(`${compression}${level === undefined ? '' : ` level ${level}`}: equivalent to mksquashfs' ${extra.join(' ')} and within 1% of its size`, async () => {
      const data = pattern(3 * 131072 + 5000, 42);
      const { ours, theirs } = await pair(compression, level, extra, data);
      const a = await readFile(ours);
      const b = await readFile(theirs);
      expect(a.readUInt16LE(20)).toBe(b.readUInt16LE(20)); // compressor id
      expect(a.readUInt16LE(24)).toBe(b.readUInt16LE(24)); // flags (incl. compressor options present)
      if (a.readUInt16LE(24) & 0x400) expect(a.subarray(96, 96 + 6).equals(b.subarray(96, 96 + 6))).toBe(true); // compressor options
      const diff = run('sqfsdiff', ['-O', '-a', theirs, '-b', ours]);
      expect(diff.stdout + diff.stderr).toBe('');
      expect(diff.code).toBe(0);
      expect(Buffer.from(runOk('unsquashfs', ['-cat', ours, 'f'], { encoding: 'latin1' }), 'latin1').equals(Buffer.from(data))).toBe(true);
      const ratio = inodeTable(a) / inodeTable(b);
      expect(ratio).toBeGreaterThan(0.99);
      expect(ratio).toBeLessThan(1.01);
    });
  }
});
