import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs, type SquashfsOptions } from '../builder/formats/squashfs/index.ts';
import { bytesContent } from '../builder/tree/content.ts';
import { FileTree } from '../builder/tree/tree.ts';
import { run, runOk } from './helpers/oracle.ts';
import { requireSquashfsOracles } from './helpers/squashfs.ts';
import { pattern } from './helpers/squashfs-trees.ts';

const te = new TextEncoder();

/** A fixed tree with every feature; its images' hashes are pinned below. */
function goldenTree(): FileTree {
  const T = 1_700_000_000;
  const t = new FileTree({ mode: 0o755, uid: 0, gid: 0, mtime: T });
  const m = { mode: 0o644, uid: 0, gid: 0, mtime: T };
  t.set('bin/prog', { type: 'file', ...m, mode: 0o755, content: bytesContent(pattern(5 * 131072 + 777, 1)) });
  t.set('bin/noise', { type: 'file', ...m, content: bytesContent(pattern(2 * 131072, 2, true)) });
  t.set('bin/prog-copy', { type: 'file', ...m, content: bytesContent(pattern(5 * 131072 + 777, 1)) });
  t.set('bin/link', { type: 'hardlink', target: 'bin/prog' });
  const sparse = new Uint8Array(4 * 131072);
  sparse.set(pattern(1000, 3), 3 * 131072);
  t.set('var/sparse', { type: 'file', ...m, content: bytesContent(sparse) });
  for (let i = 0; i < 400; i++) t.set(`etc/conf.d/${String(i).padStart(4, '0')}.conf`, { type: 'file', ...m, uid: i % 3, content: bytesContent(te.encode(`key${i}=value${i}\n`.repeat(i % 17))) });
  t.set('etc/secret', { type: 'file', ...m, mode: 0o600, xattrs: { 'security.selinux': te.encode('system_u:object_r:shadow_t:s0'), 'user.note': te.encode('x') }, content: bytesContent(te.encode('s3cret')) });
  t.set('dev/console', { type: 'char', ...m, mode: 0o600, major: 5, minor: 1 });
  t.set('dev/sda', { type: 'block', ...m, mode: 0o660, gid: 6, major: 8, minor: 0 });
  t.set('run/initctl', { type: 'fifo', ...m });
  t.set('run/sock', { type: 'socket', ...m, mode: 0o777 });
  t.set('sbin/init', { type: 'symlink', ...m, mode: 0o777, target: '../bin/prog' });
  return t;
}

/**
 * sha256 of goldenTree()'s image per compressor. Same bytes on every machine, thread count and
 * run: a change here means the on-disk output changed (a new pako, @bokuweb/zstd-wasm or
 * node-liblzma release, or a writer change) and must be deliberate. Regenerated from the
 * single-threaded image when the embedded compressors were replaced by these npm packages
 * (gzip's hash did not change: pako with legacyHash is byte-identical to zlib).
 */
const GOLDEN: Record<SquashfsOptions['compression'], string> = {
  gzip: '18c1807a9993389b12b7449580c4832f72e5d245ebf6cb81fce152c9e7f9f736',
  zstd: '07bf603e590508cd235e199c73eb21be3d7217d97cbf338564c5e9b0ed4be972',
  xz: 'c30849e11c52fe141a1078066c3cbf3d6a1ea616b8d0a60dfc6cca8dd8ce731a',
  none: 'f838e8d09dfb36620885edaae9d71916a9f98f5a105b3cb31ad88cd72836e49d',
};

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
