import fc from 'fast-check';
import { mkdtemp, readFile, readlink, rm, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs, type SquashfsOptions } from '../../builder/formats/squashfs/index.ts';
import { SquashfsReader } from '../../builder/formats/squashfs/reader.ts';
import { readContent } from '../../builder/tree/content.ts';
import type { FileTree, InodeEntry } from '../../builder/tree/tree.ts';
import { run, runOk } from '../helpers/oracle.ts';
import { gensquashfsImage, requireSquashfsOracles, withoutXattrs } from '../helpers/squashfs.ts';
import { buildTree, expectedListing, maskDirSize, treeSpecArb } from '../helpers/squashfs-trees.ts';

const optionsArb = fc.record({
  compression: fc.constantFrom('gzip' as const, 'zstd' as const, 'xz' as const, 'none' as const),
  blockSize: fc.constantFrom(4096, 8192, 65536, 131072),
  threads: fc.integer({ min: 1, max: 3 }),
  frag: fc.constantFrom('default', 'none', 'always'),
});

const NUM_RUNS = Number(process.env.OSSIFY_PROPERTY_RUNS ?? 30);

/** `unsquashfs -lln` in UTC, as lines (directory sizes masked: writers may lay listings out differently). */
function unsquashfsListing(img: string): string[] {
  const out = runOk('unsquashfs', ['-lln', img], { env: { ...process.env, TZ: 'UTC' } });
  return out
    .split('\n')
    .filter((l) => l.includes('squashfs-root'))
    .map(maskDirSize);
}

/** rdsquashfs -x prints text values as is and others as 0x-hex. */
function rdXattr(v: Uint8Array): string {
  const printable = v.every((c) => c >= 0x20 && c < 0x7f);
  return printable ? Buffer.from(v).toString('latin1') : `0x${Buffer.from(v).toString('hex').toUpperCase()}`;
}

async function checkImage(tree: FileTree, img: string, opts: SquashfsOptions, work: string): Promise<void> {
  // 1. unsquashfs lists exactly the tree.
  expect(unsquashfsListing(img)).toEqual(expectedListing(tree));

  // 2. sqfsdiff finds no difference from gensquashfs' image of the same tree (both without
  // xattrs, which gensquashfs cannot take from a pack file; they are checked below).
  const refDir = await mkdtemp(join(work, 'ref-'));
  const plain = withoutXattrs(tree);
  const ref = await gensquashfsImage(plain, refDir, { compressor: opts.compression === 'none' ? 'gzip' : opts.compression, blockSize: opts.blockSize ?? 131072, mtime: 0 });
  const plainImg = join(refDir, 'ours-plain.sqfs');
  await writeSquashfs(plain, plainImg, opts);
  const diff = run('sqfsdiff', ['-a', ref, '-b', plainImg]);
  expect(diff.stdout + diff.stderr).toBe('');
  expect(diff.code).toBe(0);

  // 3. Our reader sees every inode as written; hard links share one inode with the right count.
  const r = await SquashfsReader.open(img);
  try {
    const names = new Map<string, number>();
    for (const [p, e] of tree.walk()) {
      if (e.type === 'hardlink') {
        const tgt = canonical(tree, p);
        names.set(tgt, (names.get(tgt) ?? 1) + 1);
      }
    }
    const inoOf = new Map<string, number>();
    for await (const { path, inode } of r.walk()) {
      const e0 = tree.get(path)!;
      const e = (e0.type === 'hardlink' ? tree.resolve(path) : e0) as InodeEntry;
      const key = e0.type === 'hardlink' ? canonical(tree, path) : path;
      expect({ path, kind: inode.kind, mode: inode.mode, uid: inode.uid, gid: inode.gid, mtime: inode.mtime }).toEqual({ path, kind: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
      expect(await r.xattrs(inode)).toEqual(e.xattrs ?? {});
      if (e.type !== 'dir') {
        expect(inode.nlink, path).toBe(names.get(key) ?? 1);
        const seen = inoOf.get(key);
        if (seen !== undefined) expect(inode.ino, path).toBe(seen);
        inoOf.set(key, inode.ino);
      }
      if (e.type === 'file') expect(Buffer.from(await r.readFileAll(inode)).equals(Buffer.from(await readContent(e.content))), path).toBe(true);
      if (e.type === 'symlink') expect(inode.target).toBe(e.target);
      if (e.type === 'char' || e.type === 'block') expect([inode.major, inode.minor]).toEqual([e.major, e.minor]);
    }
  } finally {
    await r.close();
  }

  // 4. rdsquashfs extracts the same contents (devices, fifos and sockets left out: no root needed).
  const dest = await mkdtemp(join(work, 'rd-'));
  runOk('rdsquashfs', ['-q', '-D', '-S', '-F', '-u', '/', '-p', dest, img]);
  for (const [p, e0] of tree.walk()) {
    if (p === '') continue;
    const e = (e0.type === 'hardlink' ? tree.resolve(p) : e0) as InodeEntry;
    const hp = join(dest, p);
    if (e.type === 'file') expect(Buffer.compare(await readFile(hp), Buffer.from(await readContent(e.content))), p).toBe(0);
    if (e.type === 'symlink') expect(await readlink(hp), p).toBe(e.target);
    if (e.type === 'dir') expect((await lstat(hp)).isDirectory(), p).toBe(true);
    // 5. and lists the same extended attributes.
    if (e.xattrs && Object.keys(e.xattrs).length > 0 && e0.type !== 'hardlink') {
      const lines = runOk('rdsquashfs', ['-x', `/${p}`, img]).trim().split('\n').sort();
      const want = Object.entries(e.xattrs)
        .map(([k, v]) => `${k}=${rdXattr(v)}`)
        .sort();
      expect(lines, p).toEqual(want);
    }
  }
  await rm(dest, { recursive: true, force: true });
  await rm(refDir, { recursive: true, force: true });
}

function canonical(tree: FileTree, p: string): string {
  let cur = p;
  for (let e = tree.get(cur); e?.type === 'hardlink'; e = tree.get(cur)) cur = e.target;
  return cur;
}

describe('squashfs writer: generated trees against the oracles', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-sqfs-prop-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('every generated tree round-trips through unsquashfs, sqfsdiff, rdsquashfs and our reader', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(treeSpecArb, optionsArb, async (spec, o) => {
        const tree = buildTree(spec, o.blockSize);
        const opts: SquashfsOptions = {
          compression: o.compression,
          blockSize: o.blockSize,
          threads: o.threads,
          noFragments: o.frag === 'none',
          alwaysFragments: o.frag === 'always',
        };
        const img = join(work, `p${n++}.sqfs`);
        await writeSquashfs(tree, img, opts);
        await checkImage(tree, img, opts, work);
        await rm(img);
      }),
      { numRuns: NUM_RUNS, endOnFailure: true },
    );
  }, 300_000);
});
